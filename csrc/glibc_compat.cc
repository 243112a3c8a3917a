// Keeps the prebuilt addon loadable on glibc 2.34 and newer (Ubuntu 22.04, RHEL 9) although the
// release is built on a newer glibc. Two references would otherwise bind to versions that are
// newer than that (check: objdump -T slimopt.node | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1):
//  - arc4random (glibc 2.36), called by the static libstdc++'s std::random_device, which slimopt
//    never uses: the definition here takes that reference instead of libc's;
//  - hypot (2.35 re-versioned it): bound here to the version every x86-64 glibc has.
// Both are hidden, so nothing outside the addon sees them.
#include <cstdint>  // defines __GLIBC__ where glibc is the C library
#if defined(__linux__) && defined(__GLIBC__) && defined(__x86_64__)
#include <sys/random.h>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) noexcept {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
  }
  return v;
}

extern "C" double slimopt_hypot_compat(double, double);
__asm__(".symver slimopt_hypot_compat,hypot@GLIBC_2.2.5");
extern "C" __attribute__((visibility("hidden"))) double hypot(double x, double y) noexcept { return slimopt_hypot_compat(x, y); }
#endif
