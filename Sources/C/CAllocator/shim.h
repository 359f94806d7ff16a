// glibc's allocator settings (mallopt), used by Kernels.configureAllocator on Linux.
#include <malloc.h>
