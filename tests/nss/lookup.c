/* The control of the name-lookup test (tests/isolation.rs): looks a user up by name
 * the way phasebox doctor looked the portage user up. tests/run links it statically,
 * as phasebox once was: where the name is not in /etc/passwd and nsswitch.conf
 * names the systemd module, glibc loads libnss_systemd.so.2 into the static
 * process, which then crashes.
 *   lookup NAME   prints "found" or "none", exits 0 */
#include <pwd.h>
#include <stdio.h>

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: lookup NAME\n");
		return 2;
	}
	puts(getpwnam(argv[1]) ? "found" : "none");
	return 0;
}
