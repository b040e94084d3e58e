// Little-endian bit packing of 256 coefficients (FIPS 202/203/204 bit order: least significant first).

/** Pack 256 i32 values `c` (0 <= c < 2^bits) from src. */
export function packI32(src: usize, dst: usize, bits: i32): void {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let o = dst;
  for (let i: usize = 0; i < 256; i++) {
    acc |= <u64>load<u32>(src + (i << 2)) << <u64>nb;
    nb += bits;
    while (nb >= 8) {
      store<u8>(o, <u8>acc);
      o++;
      acc >>= 8;
      nb -= 8;
    }
  }
}

/** Pack 256 i32 values as (off - c), which must lie in [0, 2^bits). */
export function packI32Off(src: usize, dst: usize, bits: i32, off: i32): void {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let o = dst;
  for (let i: usize = 0; i < 256; i++) {
    acc |= <u64>(<u32>(off - load<i32>(src + (i << 2)))) << <u64>nb;
    nb += bits;
    while (nb >= 8) {
      store<u8>(o, <u8>acc);
      o++;
      acc >>= 8;
      nb -= 8;
    }
  }
}

/** Unpack 256 values of `bits` bits into i32 coefficients. */
export function unpackI32(src: usize, dst: usize, bits: i32): void {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let s = src;
  const mask: u64 = (<u64>1 << <u64>bits) - 1;
  for (let i: usize = 0; i < 256; i++) {
    while (nb < bits) {
      acc |= <u64>load<u8>(s) << <u64>nb;
      s++;
      nb += 8;
    }
    store<i32>(dst + (i << 2), <i32>(acc & mask));
    acc >>= <u64>bits;
    nb -= bits;
  }
}

/** Unpack 256 values v of `bits` bits into i32 coefficients off - v. */
export function unpackI32Off(src: usize, dst: usize, bits: i32, off: i32): void {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let s = src;
  const mask: u64 = (<u64>1 << <u64>bits) - 1;
  for (let i: usize = 0; i < 256; i++) {
    while (nb < bits) {
      acc |= <u64>load<u8>(s) << <u64>nb;
      s++;
      nb += 8;
    }
    store<i32>(dst + (i << 2), off - <i32>(acc & mask));
    acc >>= <u64>bits;
    nb -= bits;
  }
}

/** Pack 256 i16 values (0 <= c < 2^bits). */
export function packI16(src: usize, dst: usize, bits: i32): void {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let o = dst;
  for (let i: usize = 0; i < 256; i++) {
    acc |= <u64>load<u16>(src + (i << 1)) << <u64>nb;
    nb += bits;
    while (nb >= 8) {
      store<u8>(o, <u8>acc);
      o++;
      acc >>= 8;
      nb -= 8;
    }
  }
}

/** Unpack 256 values of `bits` bits into i16 coefficients. */
export function unpackI16(src: usize, dst: usize, bits: i32): void {
  let acc: u64 = 0;
  let nb: i32 = 0;
  let s = src;
  const mask: u64 = (<u64>1 << <u64>bits) - 1;
  for (let i: usize = 0; i < 256; i++) {
    while (nb < bits) {
      acc |= <u64>load<u8>(s) << <u64>nb;
      s++;
      nb += 8;
    }
    store<i16>(dst + (i << 1), <i16>(acc & mask));
    acc >>= <u64>bits;
    nb -= bits;
  }
}
