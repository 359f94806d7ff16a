#ifndef AMUSED_JPEG_H
#define AMUSED_JPEG_H

#include <stddef.h>

/// Decodes a JPEG held in memory to 8-bit RGB with libjpeg's defaults, as Pillow decodes it (islow IDCT, fancy
/// upsampling). Refuses images over `max_pixels` before decoding a pixel. On success returns malloc'd pixels
/// (width × height × 3, free with `free`) and sets the size; on failure returns NULL with libjpeg's message in
/// `error` (a buffer of `error_size` bytes).
unsigned char *amused_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, int *width, int *height,
                                  char *error, size_t error_size);

/// Frees pixels returned by `amused_jpeg_decode`.
void amused_jpeg_free(unsigned char *pixels);

#endif
