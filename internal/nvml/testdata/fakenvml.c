// A stand-in for libnvidia-ml.so.1, for package nvml's tests: the entry points
// the package calls, with a process list taken from the environment at
// nvmlInit_v2 and written with a chosen stride, so that the dlopen path, the
// buffer-size retry and the stride probe run on machines without a GPU.
//
//   FAKE_NVML_STRIDE   bytes per entry: 16, 24 or 32 (default 24)
//   FAKE_NVML_DEVICES  devices separated by ';', each a list "pid:bytes,pid:bytes"
//
// Build: cc -shared -fPIC -o libnvidia-ml.so.1 fakenvml.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXDEV 8
#define MAXPROC 256

static int stride = 24;
static int ndev;
static int nproc[MAXDEV];
static unsigned int pids[MAXDEV][MAXPROC];
static unsigned long long used[MAXDEV][MAXPROC];

int nvmlInit_v2(void) {
	const char *s = getenv("FAKE_NVML_STRIDE");
	stride = s ? atoi(s) : 24;
	ndev = 0;
	memset(nproc, 0, sizeof nproc);
	const char *d = getenv("FAKE_NVML_DEVICES");
	if (!d) return 0;
	ndev = 1;
	for (const char *p = d; *p && ndev <= MAXDEV;) {
		if (*p == ';') {
			ndev++;
			p++;
			continue;
		}
		if (*p == ',') {
			p++;
			continue;
		}
		char *end;
		unsigned long pid = strtoul(p, &end, 10);
		if (*end != ':') return 999; // NVML_ERROR_UNKNOWN: a malformed list
		unsigned long long b = strtoull(end + 1, &end, 10);
		int i = ndev - 1, k = nproc[i]++;
		pids[i][k] = (unsigned int)pid;
		used[i][k] = b;
		p = end;
	}
	return 0;
}

int nvmlShutdown(void) { return 0; }

const char *nvmlErrorString(int r) { return r == 2 ? "Invalid Argument" : "Insufficient Size"; }

int nvmlDeviceGetCount_v2(unsigned int *n) {
	*n = (unsigned int)ndev;
	return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
	if ((int)i >= ndev) return 2; // NVML_ERROR_INVALID_ARGUMENT
	*h = (void *)(uintptr_t)(i + 1);
	return 0;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, void *buf) {
	int i = (int)(uintptr_t)h - 1;
	if (*count < (unsigned int)nproc[i]) {
		*count = (unsigned int)nproc[i];
		return 7; // NVML_ERROR_INSUFFICIENT_SIZE
	}
	for (int k = 0; k < nproc[i]; k++) {
		unsigned char *e = (unsigned char *)buf + (size_t)k * stride;
		memset(e, 0, stride);
		memcpy(e, &pids[i][k], 4);
		memcpy(e + 8, &used[i][k], 8);
		if (stride >= 24) memset(e + 16, 0xFF, 8); // gpuInstanceId, computeInstanceId: no MIG
	}
	*count = (unsigned int)nproc[i];
	return 0;
}
