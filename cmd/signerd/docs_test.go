package main

import (
	"os"
	"regexp"
	"signerd/api"
	"strings"
	"testing"
)

// TestAPIDocMatchesRoutes holds docs/api.md to the routes signerd serves:
// every route has a "### METHOD /path" heading and every heading a route.
func TestAPIDocMatchesRoutes(t *testing.T) {
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	heading := regexp.MustCompile(`(?m)^### (GET|POST) (\S+)(?: and (\S+))?`)
	for _, m := range heading.FindAllStringSubmatch(string(doc), -1) {
		path := regexp.MustCompile(`\[.*\]$`).ReplaceAllString(m[2], "")
		path = strings.ReplaceAll(path, "{YYYY-MM}", "{month}")
		documented[m[1]+" "+path] = true
		if m[3] != "" { // "/hold and /restore"
			documented[m[1]+" "+path[:strings.LastIndex(path, "/")]+m[3]] = true
		}
	}
	served := map[string]bool{}
	(&server{}).mux(nil, func(p string) { served[p] = true })
	for p := range served {
		if !documented[p] {
			t.Errorf("route %s is not documented in docs/api.md", p)
		}
	}
	for p := range documented {
		if !served[p] {
			t.Errorf("docs/api.md documents %s, which signerd does not serve", p)
		}
	}
}

// TestMuxServesTheContract holds the routes signerd serves to the ones
// package api describes to its clients.
func TestMuxServesTheContract(t *testing.T) {
	served := map[string]bool{}
	(&server{}).mux(nil, func(p string) { served[p] = true })
	for _, r := range api.Routes {
		if !served[r.Pattern()] {
			t.Errorf("api.Routes has %s, which signerd does not serve", r.Pattern())
		}
		delete(served, r.Pattern())
	}
	for p := range served {
		t.Errorf("signerd serves %s, which api.Routes lacks", p)
	}
}
