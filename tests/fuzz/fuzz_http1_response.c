/*
 * tests/fuzz/fuzz_http1_response: libFuzzer harness for proxy/http1 on an upstream
 * connection's byte stream (one answer, with interim 1xx before it, and whatever the
 * upstream sends after it). Input: one byte (low 3 bits + 1: how many piece sizes
 * follow; high bit: the request was HEAD), the piece sizes, then the bytes of the
 * connection. See http1_driver.h for what is checked.
 */
#include "tests/fuzz/http1_driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http1_fuzz_one(HTTP1_STREAM_RESPONSES, data, size);
    return 0;
}
