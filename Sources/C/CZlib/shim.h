// zlib (RFC 1950/1951), as Debian's zlib1g-dev installs it.
#include <zlib.h>
