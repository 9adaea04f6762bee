// Command ocsp-responder serves the OCSP responses signerd signs ahead of
// time, over HTTP on a TCP address (RFC 6960, RFC 5019's GET and POST).
// It is the public side of the revocation service: it holds no key and no
// HSM session, signs nothing, and only reads the responses signerd
// publishes (publish.dir, ocsp/<issuer SKI>/<serial>.der) or stores
// (signerd's PostgreSQL store, table ocsp_responses, read-only).
//
//	ocsp-responder --config /etc/ocsp-responder/ocsp-responder.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// maxHeaderBytes bounds a request's head: a GET of the largest request
// allowed, fully percent-escaped, and the headers a browser or CDN adds.
func maxHeaderBytes(maxRequest int) int { return 8<<10 + 3*((maxRequest+2)/3*4) }

func main() {
	configPath := flag.String("config", "/etc/ocsp-responder/ocsp-responder.yaml", "configuration file (YAML)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*configPath, log); err != nil {
		log.Error("ocsp-responder stopped", "err", err)
		os.Exit(1)
	}
}

func run(configPath string, log *slog.Logger) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	iss, err := loadIssuers(cfg.issuers)
	if err != nil {
		return err
	}
	var src source
	where := []any{"dir", cfg.dir}
	if cfg.postgres != nil {
		src, err = openPGSource(cfg.postgres, cfg.cacheEntries, log)
		where = []any{"source", "postgres", "cache_ttl", cfg.postgres.cacheTTL.String(), "timeout", cfg.postgres.timeout.String()}
	} else {
		src, err = openDirSource(cfg.dir, cfg.cacheEntries)
	}
	if err != nil {
		return err
	}
	defer src.close()
	r := &responder{issuers: iss, source: src, maxRequest: cfg.maxRequestBytes, now: time.Now, log: log}

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.listen, err)
	}
	limited := limitConnections(ln, cfg.maxConnections, cfg.maxPerHost)
	srv := &http.Server{
		Handler:           r,
		ReadHeaderTimeout: cfg.readHeader,
		ReadTimeout:       cfg.read,
		WriteTimeout:      cfg.write,
		IdleTimeout:       cfg.idle,
		MaxHeaderBytes:    maxHeaderBytes(cfg.maxRequestBytes),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(limited) }()
	log.Info("listening", append([]any{"addr", ln.Addr().String(), "issuers", len(cfg.issuers)}, append(where,
		"max_connections", cfg.maxConnections, "max_request_bytes", cfg.maxRequestBytes, "cache_entries", cfg.cacheEntries)...)...)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case sig := <-stop:
		log.Info("stopping", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	c := &r.counts
	log.Info("stopped", "good", c.good.Load(), "not_modified", c.notModified.Load(), "unauthorized", c.unauthorized.Load(),
		"malformed", c.malformed.Load(), "stale", c.stale.Load(), "unavailable", c.unavailable.Load(), "internal_error", c.internal.Load(),
		"connections_refused", limited.refused.Load(), "cached", src.cached())
	return nil
}
