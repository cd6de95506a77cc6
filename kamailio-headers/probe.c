/* Build probe: prints the core's version and flags as compiled with our defines. */
#include <stdio.h>
#include "core/ver_defs.h"

int main(void)
{
	printf("%s\n%s\n", SER_FULL_VERSION, SER_COMPILE_FLAGS);
	return 0;
}
