/*
 * peercred: the kernel's view of who is on the other end of a local (AF_UNIX) socket.
 *
 *   getPeerCred(fd)   -> { pid, uid, gid }   getsockopt(SOL_SOCKET, SO_PEERCRED)
 *   getPeerGroups(fd) -> number[]            getsockopt(SOL_SOCKET, SO_PEERGROUPS) (Linux >= 4.13)
 *
 * The credentials are those the peer had when it called connect() (or socketpair()); the kernel records
 * them, so the peer cannot lie about them. Failures throw a JS Error whose message carries the errno text
 * and whose `code` is the errno name (e.g. "EBADF"), with `errno` and `syscall` properties like Node's.
 *
 * Only Node-API (napi_*) is used: no V8 API, no node-addon-api. A binary built once loads under every
 * Node.js that supports NAPI_VERSION 8 (Node >= 12.22 / 14.17 / 16), whichever Node ran the build.
 * Built by scripts/build-native.mjs into build/peercred.node; loaded by host/agent/peercred.ts.
 */
#define NAPI_VERSION 8
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

/* Bail out of the current function with NULL when a napi call fails; a JS exception is then pending
 * (napi_throw_* or the failing call itself), or we raise a generic one. */
#define NAPI_CALL(env, call)                                                                         \
  do {                                                                                               \
    if ((call) != napi_ok) {                                                                         \
      bool pending = false;                                                                          \
      napi_is_exception_pending((env), &pending);                                                    \
      if (!pending) napi_throw_error((env), "ERR_PEERCRED_NAPI", "peercred: Node-API call failed: " #call); \
      return NULL;                                                                                   \
    }                                                                                                \
  } while (0)

static const char *errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ERANGE: return "ERANGE";
    case ENOMEM: return "ENOMEM";
    case EFAULT: return "EFAULT";
    default: return "EPEERCRED";
  }
}

/* Throw Error(`<what> failed: <strerror>`) with code/errno/syscall set. Returns NULL for convenience. */
static napi_value throw_errno(napi_env env, int err, const char *what) {
  char text[256];
  char msg[512];
  /* GNU strerror_r returns the message (possibly not in `text`). */
  const char *desc = strerror_r(err, text, sizeof text);
  snprintf(msg, sizeof msg, "%s failed: %s", what, desc);

  napi_value code, message, error, errno_value, syscall;
  if (napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok) {
    napi_throw_error(env, errno_name(err), msg);
    return NULL;
  }
  if (napi_create_int32(env, -err, &errno_value) == napi_ok)
    napi_set_named_property(env, error, "errno", errno_value);
  if (napi_create_string_utf8(env, "getsockopt", NAPI_AUTO_LENGTH, &syscall) == napi_ok)
    napi_set_named_property(env, error, "syscall", syscall);
  napi_throw(env, error);
  return NULL;
}

/* The single argument: a non-negative integer fd. Returns -1 with a TypeError pending otherwise. */
static int fd_argument(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_number) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "peercred: fd must be a number");
    return -1;
  }
  double d;
  if (napi_get_value_double(env, argv[0], &d) != napi_ok || d != d || d < 0 || d > INT_MAX ||
      d != (double)(int)d) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "peercred: fd must be a non-negative integer");
    return -1;
  }
  return (int)d;
}

/* SO_PEERCRED on a non-AF_UNIX socket does not fail: it reports pid 0 and the overflow uid/gid (65534,
 * i.e. "nobody"). Refuse anything that is not a Unix-domain socket so that can never be mistaken for a
 * real caller. */
static int require_unix_socket(napi_env env, int fd) {
  int domain = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    throw_errno(env, errno, "getsockopt(SO_DOMAIN)");
    return -1;
  }
  if (domain != AF_UNIX) {
    throw_errno(env, EAFNOSUPPORT, "getsockopt(SO_PEERCRED) on a non-Unix socket");
    return -1;
  }
  return 0;
}

static napi_value get_peer_cred(napi_env env, napi_callback_info info) {
  int fd = fd_argument(env, info);
  if (fd < 0) return NULL;
  if (require_unix_socket(env, fd) != 0) return NULL;

  struct ucred cred;
  socklen_t len = sizeof cred;
  memset(&cred, 0, sizeof cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return throw_errno(env, errno, "getsockopt(SO_PEERCRED)");
  if (len != sizeof cred) return throw_errno(env, EINVAL, "getsockopt(SO_PEERCRED) (short read)");
  /* An unconnected or listening socket has no peer: the kernel reports pid 0. */
  if (cred.pid <= 0) return throw_errno(env, ENOTCONN, "getsockopt(SO_PEERCRED) (no peer process)");

  napi_value result, pid, uid, gid;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_int32(env, (int32_t)cred.pid, &pid));
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)cred.uid, &uid));
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)cred.gid, &gid));
  NAPI_CALL(env, napi_set_named_property(env, result, "pid", pid));
  NAPI_CALL(env, napi_set_named_property(env, result, "uid", uid));
  NAPI_CALL(env, napi_set_named_property(env, result, "gid", gid));
  return result;
}

static napi_value get_peer_groups(napi_env env, napi_callback_info info) {
  int fd = fd_argument(env, info);
  if (fd < 0) return NULL;
  if (require_unix_socket(env, fd) != 0) return NULL;

  /* Start with room for 64 groups; on ERANGE the kernel tells us the size it needs. */
  socklen_t cap = 64 * sizeof(gid_t);
  gid_t *groups = NULL;
  socklen_t len = 0;
  for (int attempt = 0; attempt < 4; attempt++) {
    gid_t *grown = realloc(groups, cap);
    if (grown == NULL) {
      free(groups);
      return throw_errno(env, ENOMEM, "getsockopt(SO_PEERGROUPS)");
    }
    groups = grown;
    len = cap;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) break;
    int err = errno;
    if (err != ERANGE || len <= cap) {
      free(groups);
      return throw_errno(env, err, "getsockopt(SO_PEERGROUPS)");
    }
    cap = len;
    len = 0;
    if (attempt == 3) {
      free(groups);
      return throw_errno(env, ERANGE, "getsockopt(SO_PEERGROUPS)");
    }
  }

  size_t count = len / sizeof(gid_t);
  napi_value result;
  if (napi_create_array_with_length(env, count, &result) != napi_ok) {
    free(groups);
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    napi_value gid;
    if (napi_create_uint32(env, (uint32_t)groups[i], &gid) != napi_ok ||
        napi_set_element(env, result, (uint32_t)i, gid) != napi_ok) {
      free(groups);
      return NULL;
    }
  }
  free(groups);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"getPeerCred", NULL, get_peer_cred, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getPeerGroups", NULL, get_peer_groups, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
