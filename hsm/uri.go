package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// TokenURI is what an RFC 7512 PKCS#11 URI says about where a token is,
// e.g. "pkcs11:token=CA%20token;serial=1a2b?module-path=/usr/lib/x.so".
type TokenURI struct {
	Token, Serial string
	ModulePath    string
	// PINFile is from pin-source=file:...; a PIN value in the URI is refused.
	PINFile string
}

// ParseTokenURI parses a PKCS#11 URI naming a token. Attributes that
// select objects, or that this package cannot honour, are refused rather
// than ignored, so a URI never selects less than it says.
func ParseTokenURI(s string) (TokenURI, error) {
	var t TokenURI
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "pkcs11" || u.Opaque == "" && u.RawQuery == "" {
		return t, errors.New("not a pkcs11: URI (RFC 7512)") // not echoed: it may hold a PIN
	}
	for _, attr := range strings.Split(u.Opaque, ";") {
		if attr == "" {
			continue
		}
		k, v, ok := strings.Cut(attr, "=")
		if !ok {
			return t, fmt.Errorf("pkcs11 URI: %q is not name=value", attr)
		}
		if v, err = url.PathUnescape(v); err != nil {
			return t, fmt.Errorf("pkcs11 URI: %s: %w", k, err)
		}
		switch k {
		case "token":
			t.Token = v
		case "serial":
			t.Serial = v
		default:
			return t, fmt.Errorf("pkcs11 URI: attribute %q is not supported here (token, serial)", k)
		}
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return t, fmt.Errorf("pkcs11 URI query: %w", err)
	}
	for k, vs := range q {
		switch k {
		case "module-path":
			t.ModulePath = vs[0]
		case "pin-source":
			path, ok := strings.CutPrefix(vs[0], "file:")
			if !ok {
				return t, fmt.Errorf("pkcs11 URI: pin-source %q: only file: sources are supported", vs[0])
			}
			t.PINFile = path
		case "pin-value":
			return t, fmt.Errorf("pkcs11 URI: pin-value refused: a PIN must not be written into configuration")
		default:
			return t, fmt.Errorf("pkcs11 URI: query attribute %q is not supported (module-path, pin-source)", k)
		}
	}
	if t.Token == "" && t.Serial == "" {
		return t, errors.New("pkcs11 URI names no token (token= or serial=)")
	}
	return t, nil
}
