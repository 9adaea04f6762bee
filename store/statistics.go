package store

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Statistic kinds reported to the regulator each month.
const (
	StatIssued   = "issued"
	StatRenewed  = "renewed"
	StatExtended = "extended"
	StatRevoked  = "revoked"
)

// Month is the statistics period of t: "2006-01" in UTC+8, the time zone
// the regulator's months are counted in.
func Month(t time.Time) string {
	return t.In(chinaStandardTime).Format("2006-01")
}

var chinaStandardTime = time.FixedZone("CST", 8*60*60)

// Count adds n to the month's counter of kind for profile.
func (t *Tx) Count(month, profile, kind string, n uint64) error {
	if strings.ContainsRune(profile, '/') || strings.ContainsRune(kind, '/') {
		return fmt.Errorf("statistic %s/%s: '/' not allowed", profile, kind)
	}
	key := StatisticKey(month, profile, kind)
	v, err := t.r.get(tableStats, key)
	if err != nil {
		return fmt.Errorf("statistic %s: %w", key, err)
	}
	var cur uint64
	if len(v) == 8 {
		cur = binary.BigEndian.Uint64(v)
	}
	return t.r.put(tableStats, key, binary.BigEndian.AppendUint64(nil, cur+n))
}

// StatisticKey names the month's counter of kind for profile, as Count
// reads and writes it (and Prefetch reads it ahead).
func StatisticKey(month, profile, kind string) []byte {
	return []byte(month + "/" + profile + "/" + kind)
}

// Statistics returns the month's counters as profile → kind → count.
func (t *Tx) Statistics(month string) (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	prefix := []byte(month + "/")
	err := t.r.scan(tableStats, nil, prefix, func(k, v []byte) error {
		profile, kind, ok := strings.Cut(string(k[len(prefix):]), "/")
		if !ok || len(v) != 8 {
			return fmt.Errorf("statistic %q: malformed", k)
		}
		if out[profile] == nil {
			out[profile] = map[string]uint64{}
		}
		out[profile][kind] = binary.BigEndian.Uint64(v)
		return nil
	})
	return out, err
}
