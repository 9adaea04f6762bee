package hsm_test

import (
	"strings"
	"testing"

	"signerd/hsm"
)

func TestParseTokenURI(t *testing.T) {
	tests := []struct {
		uri  string
		want hsm.TokenURI
		err  string
	}{
		{uri: "pkcs11:token=ca", want: hsm.TokenURI{Token: "ca"}},
		{uri: "pkcs11:token=CA%20token;serial=1a2b", want: hsm.TokenURI{Token: "CA token", Serial: "1a2b"}},
		{uri: "pkcs11:serial=99?module-path=/usr/lib/x.so&pin-source=file:/etc/pin",
			want: hsm.TokenURI{Serial: "99", ModulePath: "/usr/lib/x.so", PINFile: "/etc/pin"}},
		{uri: "pkcs11:token=ca?pin-value=1234", err: "pin-value refused"},
		{uri: "pkcs11:token=ca;object=key", err: `attribute "object"`},
		{uri: "pkcs11:model=x", err: `attribute "model"`},
		{uri: "pkcs11:?module-path=/x.so", err: "names no token"},
		{uri: "pkcs11:token=ca?pin-source=|cat", err: "only file:"},
		{uri: "https://ca", err: "not a pkcs11: URI"},
		{uri: "pkcs11:token=%zz", err: "token"},
	}
	for _, tt := range tests {
		got, err := hsm.ParseTokenURI(tt.uri)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v, want error %q", tt.uri, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v, %v; want %+v", tt.uri, got, err, tt.want)
		}
	}
}
