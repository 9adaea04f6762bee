package store

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// PostgresDSNSecret names the secret a DSN holds ("password", "sslpassword"),
// "" if none. It reads the DSN as libpq and pgx do: a postgres:// or
// postgresql:// URL (a password in its user information, or either as a
// query parameter), otherwise keyword = value pairs, a value quoted with
// single quotes or not, backslash escaping the next character.
//
// A DSN is written on command lines and in config files, which others
// read (ps, a config file's readers): signerd and signerctl refuse one
// that holds a secret, which belongs in a passfile.
func PostgresDSNSecret(dsn string) (string, error) {
	var keys []string
	if rest, ok := cutURLScheme(dsn); ok {
		// As libpq: user information is whatever comes before an '@' that
		// comes before the first '/'.
		if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
			if _, pw, ok := strings.Cut(rest[:i], ":"); ok && pw != "" {
				return "password", nil
			}
		}
		if _, query, ok := strings.Cut(rest, "?"); ok {
			for param := range strings.SplitSeq(query, "&") {
				key, _, _ := strings.Cut(param, "=")
				key, err := url.PathUnescape(key)
				if err != nil {
					return "", fmt.Errorf("a query parameter's name: %w", err)
				}
				keys = append(keys, key)
			}
		}
	} else {
		var err error
		if keys, err = keywordKeys(dsn); err != nil {
			return "", err
		}
	}
	for _, k := range keys {
		for _, secret := range []string{"password", "sslpassword"} {
			if strings.EqualFold(strings.TrimSpace(k), secret) {
				return secret, nil
			}
		}
	}
	return "", nil
}

func cutURLScheme(dsn string) (string, bool) {
	for _, scheme := range []string{"postgresql://", "postgres://"} {
		if rest, ok := strings.CutPrefix(dsn, scheme); ok {
			return rest, true
		}
	}
	return "", false
}

// keywordKeys are the keywords of a keyword/value DSN.
func keywordKeys(s string) ([]string, error) {
	const space = " \t\n\r\v\f"
	var keys []string
	for s = strings.TrimLeft(s, space); s != ""; s = strings.TrimLeft(s, space) {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errors.New("not a keyword/value DSN or postgres:// URL: a keyword without '='")
		}
		key := strings.Trim(s[:eq], space)
		if key == "" || strings.ContainsAny(key, space) {
			return nil, errors.New("not a keyword/value DSN: a keyword is empty or holds a space")
		}
		keys = append(keys, key)
		s = strings.TrimLeft(s[eq+1:], space)
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		end := 0
		for ; end < len(s); end++ {
			c := s[end]
			if c == '\\' {
				end++
				continue
			}
			if quoted && c == '\'' || !quoted && strings.IndexByte(space, c) >= 0 {
				break
			}
		}
		switch {
		case quoted && end >= len(s):
			return nil, errors.New("not a keyword/value DSN: a quoted value without its closing quote")
		case quoted:
			s = s[end+1:]
		case end >= len(s):
			s = ""
		default:
			s = s[end:]
		}
	}
	return keys, nil
}
