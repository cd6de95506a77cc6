/* Functions over Kamailio macros, so that Rust can call them by name. */
#ifndef MQUEUE_RS_SHIM_H
#define MQUEUE_RS_SHIM_H

#include <stddef.h>
#include "core/str.h"
#include "core/parser/msg_parser.h"
#include "core/mod_fix.h"

/* Logs one line at a Kamailio log level (L_ERR, L_WARN, ...). */
void mqrs_log(int level, const char *text, int len);
/* Returns non-zero when a message at this level would be printed. */
int mqrs_log_enabled(int level);
/* shm_malloc / shm_free (macros that carry the call site). */
void *mqrs_shm_malloc(size_t size);
void mqrs_shm_free(void *p);
/* fixup_get_svalue: the string value of a fixed-up parameter. */
int mqrs_get_svalue(struct sip_msg *msg, gparam_t *gp, str *out);

#endif
