/* proxy/metrics: placeholder until the implementation lands (see metrics.h). */
#include "proxy/metrics.h"

#include <stdlib.h>

struct metrics {
    int unused;
};

struct metrics *metrics_new(void) { return calloc(1, sizeof(struct metrics)); }
void metrics_free(struct metrics *m) { free(m); }
void metrics_request_done(struct metrics *m, const char *upstream, const char *route, int status,
                          const char *reason, uint64_t queue_wait_ns, uint64_t upstream_ns)
{
}
void metrics_config_loaded(struct metrics *m, int ok, int64_t when) {}
void metrics_render(const struct metrics *m, const struct server *s, struct evbuffer *out) {}
