/* C shim over the Kamailio macros the module needs (see shim.h). */
#include "core/dprint.h"
#include "core/mem/shm_mem.h"
#include "shim.h"

void mqrs_log(int level, const char *text, int len)
{
	LOG(level, "%.*s\n", len, text);
}

int mqrs_log_enabled(int level)
{
	return is_printable(level);
}

void *mqrs_shm_malloc(size_t size)
{
	return shm_malloc(size);
}

void mqrs_shm_free(void *p)
{
	shm_free(p);
}

int mqrs_get_svalue(struct sip_msg *msg, gparam_t *gp, str *out)
{
	return fixup_get_svalue(msg, gp, out);
}
