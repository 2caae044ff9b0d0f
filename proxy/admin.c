/* proxy/admin: placeholder until the implementation lands (see admin.h). */
#include "proxy/admin.h"

#include <stddef.h>

struct admin *admin_new(struct server *s, const struct conf_admin *ca) { return NULL; }
void admin_free(struct admin *a) {}
