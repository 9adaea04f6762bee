package api_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"signerd/api"
	"signerd/revocation"
)

// encodingJSON is c as encoding/json writes the answer.
func encodingJSON(t *testing.T, c *api.Certificate) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A certificate answer is written byte for byte as encoding/json writes
// it, whatever its strings hold and whichever fields are empty.
func TestCertificateJSONAsEncodingJSON(t *testing.T) {
	now := time.Date(2026, 11, 30, 8, 1, 2, 345678000, time.FixedZone("CST", 8*3600))
	pem := "-----BEGIN CERTIFICATE-----\nMIIB+zCCAaGgAwIBAgIQ\nAbc/=\n-----END CERTIFICATE-----\n"
	base := func() *api.Certificate {
		return &api.Certificate{Serial: "0badc0ffee", Status: "good", Profile: "person-sign", Subject: "CN=Zhang San,O=signerd,C=CN",
			Issuer: "a1b2", NotBefore: now, NotAfter: now.AddDate(1, 0, 0), RequestID: "r-1", Certificate: pem}
	}
	revoked := now.Add(time.Hour)
	tests := []struct {
		name   string
		modify func(*api.Certificate)
	}{
		{"issued", func(*api.Certificate) {}},
		{"revoked", func(c *api.Certificate) {
			c.Status, c.RevokedAt, c.Reason = "revoked", &revoked, revocation.KeyCompromise
		}},
		{"replacing and replaced", func(c *api.Certificate) { c.Replaces, c.SupersededBy = "01", "02" }},
		{"UTC times, no fraction", func(c *api.Certificate) { c.NotBefore, c.NotAfter = now.UTC().Truncate(time.Second), time.Time{} }},
		{"every field empty", func(c *api.Certificate) { *c = api.Certificate{} }},
		{"HTML and quotes", func(c *api.Certificate) { c.Subject = `CN=<b>&"x"\y` }},
		{"not ASCII", func(c *api.Certificate) { c.Subject = "CN=张三,O=签名" }},
		{"controls and line separators", func(c *api.Certificate) { c.Subject = "CN=a\tb\rc\bd\fe\x01f\u2028g\u2029h\x7f" }},
		{"invalid UTF-8", func(c *api.Certificate) { c.Subject = "CN=\xff\xfe" }},
		{"newlines only", func(c *api.Certificate) { c.Certificate = "\n\n" }},
		{"negative reason", func(c *api.Certificate) { c.Reason = -3 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.modify(c)
			got, err := c.AppendIndentedJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := encodingJSON(t, c); !bytes.Equal(got, want) {
				t.Fatalf("AppendIndentedJSON wrote\n%s\nencoding/json writes\n%s", got, want)
			}
		})
	}
	far := base()
	far.NotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := far.AppendIndentedJSON(nil); err == nil {
		t.Fatal("a time encoding/json refuses was written")
	}
}

// Every field of Certificate is written: a field added to the type and not
// to AppendIndentedJSON fails here.
func TestCertificateJSONEveryField(t *testing.T) {
	var c api.Certificate
	v := reflect.ValueOf(&c).Elem()
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name)
		case reflect.Int:
			f.SetInt(int64(i + 1))
		case reflect.Pointer:
			f.Set(reflect.ValueOf(&when))
		case reflect.Struct:
			f.Set(reflect.ValueOf(when.Add(time.Duration(i) * time.Hour)))
		default:
			t.Fatalf("field %s of kind %v: teach this test and AppendIndentedJSON", v.Type().Field(i).Name, f.Kind())
		}
	}
	got, err := c.AppendIndentedJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := encodingJSON(t, &c); !bytes.Equal(got, want) {
		t.Fatalf("AppendIndentedJSON wrote\n%s\nencoding/json writes\n%s", got, want)
	}
}

// FuzzCertificateJSON: any strings, written as encoding/json writes them.
func FuzzCertificateJSON(f *testing.F) {
	f.Add("CN=a", "-----BEGIN CERTIFICATE-----\nAB==\n-----END CERTIFICATE-----\n", int64(0))
	f.Add("CN=<&>\u2028", "\xff", int64(1))
	f.Fuzz(func(t *testing.T, subject, pem string, sec int64) {
		c := &api.Certificate{Serial: pem, Subject: subject, Certificate: pem, NotBefore: time.Unix(sec%(1<<34), 0).UTC()}
		got, err := c.AppendIndentedJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := encodingJSON(t, c); !bytes.Equal(got, want) {
			t.Fatalf("AppendIndentedJSON wrote\n%q\nencoding/json writes\n%q", got, want)
		}
	})
}
