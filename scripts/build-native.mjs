// Placeholder replaced by the native addon build (see native/). Kept so `npm run build` works meanwhile.
process.stdout.write("build:native nothing to build yet\n");
