/*
 * tests/fuzz/fuzz_http1_request: libFuzzer harness for proxy/http1 on a client
 * connection's byte stream (requests, pipelined). Input: one byte saying how many piece
 * sizes follow (low 3 bits + 1), the piece sizes, then the bytes of the connection.
 * See http1_driver.h for what is checked.
 */
#include "tests/fuzz/http1_driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http1_fuzz_one(HTTP1_STREAM_REQUESTS, data, size);
    return 0;
}
