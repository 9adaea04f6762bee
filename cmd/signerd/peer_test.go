package main

import (
	"slices"
	"testing"
)

func TestRolesOf(t *testing.T) {
	r := roles{
		roleRA:       {UIDs: []int{100}, GIDs: []int{500}},
		roleOperator: {UIDs: []int{101, 103}, GIDs: []int{501}},
		roleAuditor:  {UIDs: []int{103}, GIDs: []int{500}},
	}
	tests := []struct {
		uid, gid int
		want     []string
	}{
		{100, 0, []string{roleRA}},
		{101, 500, []string{roleOperator}},            // a uid match wins over gid matches
		{102, 501, []string{roleOperator}},            // by gid
		{102, 500, []string{roleAuditor, roleRA}},     // a group in two roles
		{103, 0, []string{roleAuditor, roleOperator}}, // a uid in two roles
		{104, 502, nil},                               // a stranger
	}
	for _, tt := range tests {
		if got := r.rolesOf(peer{UID: tt.uid, GID: tt.gid}); !slices.Equal(got, tt.want) {
			t.Errorf("uid %d gid %d: roles %v, want %v", tt.uid, tt.gid, got, tt.want)
		}
	}
	want := []string{"gid 500 holds auditor, ra", "uid 103 holds auditor, operator"}
	if got := r.overlaps(); !slices.Equal(got, want) {
		t.Errorf("overlaps %q, want %q", got, want)
	}
}
