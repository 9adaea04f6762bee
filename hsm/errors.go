package hsm

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

var (
	// ErrTransient marks a failure a retry may cure: the session or login
	// was lost and the pool has restored it. The signature was not made.
	ErrTransient = errors.New("transient HSM failure, retry")
	// ErrPINIncorrect is never retried: tokens lock after a few wrong PINs.
	ErrPINIncorrect = errors.New("PIN incorrect")
	// ErrPINLocked means the token refuses the user PIN until the SO resets it.
	ErrPINLocked = errors.New("PIN locked")
	// ErrPINUnreadable: the PIN's source (file, credential, shares) could
	// not be read or is refused (a mode beyond 0600, another uid's file).
	// Trying again unchanged will not help.
	ErrPINUnreadable = errors.New("PIN unreadable")
	// ErrKeyNotFound: no private key with that label.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyExists: a key with that label exists and would be shadowed.
	ErrKeyExists = errors.New("key label already in use")
	// ErrBadSignature: the module returned a signature that does not verify
	// under the key's public key (faulty hardware or the wrong key).
	ErrBadSignature = errors.New("HSM returned a signature that does not verify")
	// ErrClosed: the module was closed.
	ErrClosed = errors.New("HSM module closed")
)

// sessionLost reports whether rv means the session or login is gone and
// must be restored before the next operation (SPEC §3.6). Object handles
// are included: private-object handles die with a logout.
func sessionLost(err error) bool {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return false
	}
	switch rv {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_SLOT_ID_INVALID:
		return true
	}
	return false
}

// refusedPIN reports a login failure that must never be retried.
func refusedPIN(err error) bool {
	return errors.Is(err, ErrPINIncorrect) || errors.Is(err, ErrPINLocked)
}

// PINRefused reports whether err means the user PIN was refused or could
// not be had: a wrong or locked PIN, or an unreadable PIN source. Starting
// again with the same PIN can only use up the token's remaining tries.
func PINRefused(err error) bool {
	return refusedPIN(err) || errors.Is(err, ErrPINUnreadable)
}

// loginError maps C_Login failures onto the errors callers act on.
func loginError(err error) error {
	var rv pkcs11.Error
	if errors.As(err, &rv) {
		switch rv {
		case pkcs11.CKR_PIN_INCORRECT:
			return ErrPINIncorrect
		case pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			// Not a PIN this token could hold: as wrong as a wrong one.
			return fmt.Errorf("%w (%w)", ErrPINIncorrect, rv)
		case pkcs11.CKR_PIN_LOCKED:
			return ErrPINLocked
		case pkcs11.CKR_PIN_EXPIRED:
			// The SO must set a new one; retrying the old never works.
			return fmt.Errorf("%w (%w)", ErrPINLocked, rv)
		}
	}
	return fmt.Errorf("login: %w", err)
}
