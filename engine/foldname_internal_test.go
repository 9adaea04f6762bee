package engine

import "testing"

// foldName's ASCII path folds as the Unicode path does: every ASCII
// character, alone and among others, spaces and controls included.
func TestFoldNameASCII(t *testing.T) {
	var all []byte
	for c := range 0x80 {
		all = append(all, byte(c))
		for _, v := range []string{string(rune(c)), "A" + string(rune(c)) + "b", " x" + string(rune(c)) + string(rune(c)) + "Y  "} {
			if got, want := foldName(v), foldUnicode(v); got != want {
				t.Fatalf("foldName(%q) = %q, want %q", v, got, want)
			}
		}
	}
	for _, v := range []string{string(all), "  signerd  Test\tIssuing\nCA ", "SIGNERD AUDIT KEY", ""} {
		if got, want := foldName(v), foldUnicode(v); got != want {
			t.Fatalf("foldName(%q) = %q, want %q", v, got, want)
		}
	}
}
