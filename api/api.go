// Package api is signerd's wire contract: what crosses its Unix socket.
// The daemon (cmd/signerd) serves it and the clients (cmd/signerctl, the
// bench, the tests) speak it, each from this one description: the routes,
// the request and answer bodies with their JSON names, the error codes
// with their HTTP status and whether a retry may succeed, and the headers
// and text of a signed RA request. docs/api.md is its prose; the tests of
// cmd/signerd hold the two together.
//
// It imports nothing of signerd's but package revocation, so that both
// sides of the socket may import it and neither drags in the other.
package api

import "strings"

// Route is one route: its method and its path, with {serial} or {month}
// where the caller names one.
type Route struct {
	Method string
	Path   string
}

// The routes signerd serves, and the role that may call each (docs/api.md).
var (
	RouteIssue       = Route{"POST", "/v1/certificates"}                  // ra
	RouteStatus      = Route{"GET", "/v1/certificates/{serial}"}          // ra
	RouteRenew       = Route{"POST", "/v1/certificates/{serial}/renew"}   // ra
	RouteExtend      = Route{"POST", "/v1/certificates/{serial}/extend"}  // ra
	RouteRevoke      = Route{"POST", "/v1/certificates/{serial}/revoke"}  // ra
	RouteHold        = Route{"POST", "/v1/certificates/{serial}/hold"}    // ra
	RouteRestore     = Route{"POST", "/v1/certificates/{serial}/restore"} // ra
	RouteLatestCRL   = Route{"GET", "/v1/crl"}                            // ra; ?issuer=SKI
	RouteSignCRL     = Route{"POST", "/v1/crl"}                           // operator; ?issuer=SKI
	RouteStatistics  = Route{"GET", "/v1/statistics/{month}"}             // auditor
	RouteExportAudit = Route{"POST", "/v1/audit/export"}                  // auditor
	RouteBackupStore = Route{"POST", "/v1/store/backup"}                  // operator
	RouteHealth      = Route{"GET", "/v1/health"}                         // operator
	RouteMetrics     = Route{"GET", "/v1/metrics"}                        // operator
)

// Routes is every route, in the order docs/api.md describes them.
var Routes = []Route{RouteIssue, RouteStatus, RouteRenew, RouteExtend, RouteRevoke, RouteHold, RouteRestore,
	RouteLatestCRL, RouteSignCRL, RouteStatistics, RouteExportAudit, RouteBackupStore, RouteHealth, RouteMetrics}

// On the CRL routes, QueryIssuer names the issuing key (hex SKI) whose
// CRL is meant (without it, the active one's), QueryShard its shard
// (decimal, default 0), and QueryDelta=true its delta CRL instead of its
// complete CRL.
const (
	QueryIssuer = "issuer"
	QueryShard  = "shard"
	QueryDelta  = "delta"
)

// Pattern is the route as net/http.ServeMux takes it: "METHOD /path".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

// TakesBody reports whether the route's method carries a body at all
// (GET does not; some POST routes refuse a non-empty one).
func (r Route) TakesBody() bool { return r.Method != "GET" }

// Target is the path with each {name} replaced, in order, by args: the
// request-target a client sends (RouteRevoke.Target(serial)).
func (r Route) Target(args ...string) string {
	p := r.Path
	for _, a := range args {
		i := strings.IndexByte(p, '{')
		j := strings.IndexByte(p, '}')
		if i < 0 || j < i {
			break
		}
		p = p[:i] + a + p[j+1:]
	}
	return p
}
