package hsm

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// InitToken initialises a new token in the module's first free slot with
// label, SO PIN and user PIN, and returns its serial number. It refuses a
// label another token already has, so a token cannot be shadowed.
func InitToken(modulePath, label string, soPIN, userPIN []byte) (string, error) {
	if label == "" || len(soPIN) == 0 || len(userPIN) == 0 {
		return "", errors.New("init token: label, SO PIN and user PIN are required")
	}
	lib, err := openLibrary(modulePath)
	if err != nil {
		return "", err
	}
	defer lib.release()
	serial, err := lib.initToken(label, soPIN, userPIN)
	if err != nil {
		return "", fmt.Errorf("init token %q: %w", label, err)
	}
	return serial, nil
}

func (l *library) initToken(label string, soPIN, userPIN []byte) (string, error) {
	if _, err := l.findSlot(label, ""); err == nil {
		return "", errors.New("a token with this label exists")
	}
	slots, err := l.ctx.GetSlotList(true)
	if err != nil {
		return "", fmt.Errorf("list slots: %w", err)
	}
	free := -1
	for _, slot := range slots {
		ti, err := l.ctx.GetTokenInfo(slot)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free = int(slot)
			break
		}
	}
	if free < 0 {
		return "", errors.New("no free slot")
	}
	if err := l.ctx.InitToken(uint(free), pinString(soPIN), label); err != nil {
		return "", fmt.Errorf("C_InitToken: %w", err)
	}
	slot, err := l.findSlot(label, "")
	if err != nil {
		return "", err
	}
	h, err := l.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return "", fmt.Errorf("open session: %w", err)
	}
	defer l.ctx.CloseSession(h)
	if err := l.ctx.Login(h, pkcs11.CKU_SO, pinString(soPIN)); err != nil {
		return "", fmt.Errorf("SO login: %w", err)
	}
	defer l.ctx.Logout(h)
	if err := l.ctx.InitPIN(h, pinString(userPIN)); err != nil {
		return "", fmt.Errorf("C_InitPIN: %w", err)
	}
	ti, err := l.ctx.GetTokenInfo(slot)
	if err != nil {
		return "", fmt.Errorf("token info: %w", err)
	}
	return ti.SerialNumber, nil
}

// pinString views a PIN as a string without copying it, so zeroing the
// slice also clears what the PKCS#11 binding was given.
func pinString(pin []byte) string {
	return unsafe.String(unsafe.SliceData(pin), len(pin))
}

// TokenPresent reports whether module has an initialised token labelled
// label, without logging in, so a ceremony can check before it changes
// anything.
func TokenPresent(modulePath, label string) (bool, error) {
	lib, err := openLibrary(modulePath)
	if err != nil {
		return false, err
	}
	defer lib.release()
	_, err = lib.findSlot(label, "")
	return err == nil, nil
}
