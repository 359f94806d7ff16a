// JPEG decoding through libjpeg(-turbo), with libjpeg's fatal errors turned into a return value (setjmp/longjmp,
// the library's documented way) instead of its default exit(). A file that ends before its last scanline is an
// error too, as it is for Pillow ("image file is truncated"); libjpeg itself only warns and fills the rest with
// gray, which let a few hundred bytes claiming a 64-megapixel image cost a full decode.

#include "amused_jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

struct amused_error_manager {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
};

static void amused_error_exit(j_common_ptr cinfo) {
    struct amused_error_manager *err = (struct amused_error_manager *)cinfo->err;
    longjmp(err->jump, 1);
}

static void amused_output_message(j_common_ptr cinfo) { (void)cinfo; }

/// Warnings are ignored (as Pillow ignores them), except the end of the data before the image is complete.
static void amused_emit_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        struct amused_error_manager *err = (struct amused_error_manager *)cinfo->err;
        longjmp(err->jump, 1);
    }
}

unsigned char *amused_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, int *width, int *height,
                                  char *error, size_t error_size) {
    struct jpeg_decompress_struct cinfo;
    struct amused_error_manager jerr;
    unsigned char *volatile pixels = NULL;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = amused_error_exit;
    jerr.pub.output_message = amused_output_message;
    jerr.pub.emit_message = amused_emit_message;
    if (setjmp(jerr.jump)) {
        char message[JMSG_LENGTH_MAX];
        (*cinfo.err->format_message)((j_common_ptr)&cinfo, message);
        snprintf(error, error_size, "%s", message);
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.image_width == 0 || cinfo.image_height == 0 ||
        (size_t)cinfo.image_width > max_pixels / (size_t)cinfo.image_height) {
        snprintf(error, error_size, "image size %ux%u is outside 1…%zu pixels", cinfo.image_width,
                 cinfo.image_height, max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return NULL;
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * 3;
    pixels = malloc(stride * cinfo.output_height);
    if (!pixels) {
        snprintf(error, error_size, "out of memory");
        jpeg_destroy_decompress(&cinfo);
        return NULL;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    *width = (int)cinfo.output_width;
    *height = (int)cinfo.output_height;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return pixels;
}

void amused_jpeg_free(unsigned char *pixels) { free(pixels); }
