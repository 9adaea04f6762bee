/*
 * pkcs11fault: a PKCS#11 module that wraps a real one and injects faults on
 * demand, for signerd's fault tests.
 *
 *   PKCS11FAULT_MODULE   the real module (a SoftHSM2 build)
 *   PKCS11FAULT_CONTROL  a file whose first word says what to do now
 *
 * The control file is read at every call the module intercepts (C_SignInit,
 * C_Sign, C_GenerateRandom, C_FindObjectsInit, and C_Login for pin-locked),
 * so a test changes the module's behaviour while the daemon runs:
 *
 *   ok              pass every call through (also: an empty or missing file)
 *   sign-error      C_Sign fails with CKR_DEVICE_ERROR (the operation ends)
 *   sign-corrupt    C_Sign succeeds with one bit of the signature flipped
 *   close-sessions  once: close every session of every slot behind the
 *                   caller's back, then write "done" into the file
 *   logout          once: log the user out, then write "done"
 *   pin-locked      C_Login fails with CKR_PIN_LOCKED, as a token does
 *                   once its user PIN is locked
 *   logout-locked   once: log the user out, then write "pin-locked" (the
 *                   PIN locked behind the caller's back, in one step)
 *
 *   PKCS11FAULT_LOGINS  if set, a file each C_Login appends one line to:
 *                       the user type and the return value, in hex
 *
 * Every other function is the real module's own.
 */
#define CK_PTR *
#define NULL_PTR 0
#define CK_DEFINE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)
#include "pkcs11.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST wrapped;
static pthread_mutex_t control_mu = PTHREAD_MUTEX_INITIALIZER;

enum fault { PASS, SIGN_ERROR, SIGN_CORRUPT };

static void mark(const char *path, const char *word) {
	FILE *f = fopen(path, "w");
	if (f) {
		fprintf(f, "%s\n", word);
		fclose(f);
	}
}

static void mark_done(const char *path) { mark(path, "done"); }

static void close_all_sessions(void) {
	CK_ULONG n = 0;
	if (real->C_GetSlotList(CK_TRUE, NULL_PTR, &n) != CKR_OK || n == 0)
		return;
	CK_SLOT_ID *slots = calloc(n, sizeof *slots);
	if (!slots)
		return;
	if (real->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK)
		for (CK_ULONG i = 0; i < n; i++)
			real->C_CloseAllSessions(slots[i]);
	free(slots);
}

/* fault reads the control file, carries out a one-shot action on session h,
 * and returns the lasting fault in force. */
static enum fault fault(CK_SESSION_HANDLE h) {
	const char *path = getenv("PKCS11FAULT_CONTROL");
	char word[32] = "";
	enum fault out = PASS;
	if (!path)
		return PASS;
	pthread_mutex_lock(&control_mu);
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%31s", word) != 1)
			word[0] = 0;
		fclose(f);
	}
	if (!strcmp(word, "sign-error")) {
		out = SIGN_ERROR;
	} else if (!strcmp(word, "sign-corrupt")) {
		out = SIGN_CORRUPT;

	} else if (!strcmp(word, "close-sessions")) {
		close_all_sessions();
		mark_done(path);
	} else if (!strcmp(word, "logout")) {
		real->C_Logout(h);
		mark_done(path);
	} else if (!strcmp(word, "logout-locked")) {
		real->C_Logout(h);
		mark(path, "pin-locked");
	}
	pthread_mutex_unlock(&control_mu);
	return out;
}

static CK_RV sign_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
	fault(h);
	return real->C_SignInit(h, mech, key);
}

static CK_RV sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len) {
	enum fault f = fault(h);
	CK_RV rv = real->C_Sign(h, data, len, sig, sig_len);
	if (sig == NULL_PTR || rv != CKR_OK)
		return rv; /* a length query, or a real failure */
	switch (f) {
	case SIGN_ERROR:
		return CKR_DEVICE_ERROR; /* the real call has ended the operation */
	case SIGN_CORRUPT:
		if (*sig_len > 0)
			sig[*sig_len / 2] ^= 0x01;
		return rv;
	default:
		return rv;
	}
}

static CK_RV generate_random(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len) {
	fault(h);
	return real->C_GenerateRandom(h, out, len);
}

static CK_RV find_objects_init(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n) {
	fault(h);
	return real->C_FindObjectsInit(h, tmpl, n);
}

/* login counts every C_Login and fails it while pin-locked is in force; it
 * carries out no one-shot action (those stay with the calls above). */
static CK_RV login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len) {
	const char *path = getenv("PKCS11FAULT_CONTROL");
	char word[32] = "";
	pthread_mutex_lock(&control_mu);
	FILE *f = path ? fopen(path, "r") : NULL;
	if (f) {
		if (fscanf(f, "%31s", word) != 1)
			word[0] = 0;
		fclose(f);
	}
	pthread_mutex_unlock(&control_mu);
	CK_RV rv = !strcmp(word, "pin-locked") ? CKR_PIN_LOCKED : real->C_Login(h, user, pin, pin_len);
	path = getenv("PKCS11FAULT_LOGINS");
	if (path) {
		pthread_mutex_lock(&control_mu);
		f = fopen(path, "a");
		if (f) {
			fprintf(f, "login user=%lx rv=%lx\n", (unsigned long)user, (unsigned long)rv);
			fclose(f);
		}
		pthread_mutex_unlock(&control_mu);
	}
	return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
	if (out == NULL_PTR)
		return CKR_ARGUMENTS_BAD;
	if (!real) {
		const char *path = getenv("PKCS11FAULT_MODULE");
		void *lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
		if (!lib)
			return CKR_GENERAL_ERROR;
		CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
		if (!get || get(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		wrapped = *real;
		wrapped.C_SignInit = sign_init;
		wrapped.C_Sign = sign;
		wrapped.C_GenerateRandom = generate_random;
		wrapped.C_FindObjectsInit = find_objects_init;
		wrapped.C_Login = login;
	}
	*out = &wrapped;
	return CKR_OK;
}
