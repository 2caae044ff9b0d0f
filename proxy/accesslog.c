/* proxy/accesslog: placeholder until the implementation lands (see accesslog.h). */
#include "proxy/accesslog.h"

#include <stdio.h>

struct accesslog *accesslog_open(const struct conf_access_log *c, char *err, size_t errlen)
{
    snprintf(err, errlen, "access_log: not implemented yet");
    return NULL;
}
int accesslog_reopen(struct accesslog *a) { return 0; }
void accesslog_write(struct accesslog *a, const struct accesslog_entry *e) {}
void accesslog_close(struct accesslog *a) {}
