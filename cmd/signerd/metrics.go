package main

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"signerd/engine"
	"signerd/hsm"
)

// metrics are signerd's Prometheus metrics, served to operators on
// GET /v1/metrics.
type metrics struct {
	reg       *prometheus.Registry
	batchSize prometheus.Histogram
	signTime  prometheus.Histogram
	hsmErrors *prometheus.CounterVec
	requests  *prometheus.CounterVec
	connsOpen *prometheus.GaugeVec
	connsShed *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	// clockSteps counts forward steps of the clock past clock_max_step
	// (engine.ClockStepMetrics).
	clockSteps prometheus.Counter
	// crlSigned and crlFailed count the CRLs the schedule signs and its
	// failures (engine.CRLMetrics), by issuer and kind (complete, delta).
	crlSigned *prometheus.CounterVec
	crlFailed *prometheus.CounterVec
	// ocspSigned and ocspFailed count the OCSP responses pre-signed and
	// recorded, and those whose signing failed (engine.OCSPMetrics).
	ocspSigned prometheus.Counter
	ocspFailed prometheus.Counter
}

// ocspDueCounted bounds the count signerd_ocsp_due reads at each scrape:
// a backlog of a million costs a scrape no more than one of this many,
// and "this many or more" is all an alarm needs.
const ocspDueCounted = 10000

// newMetrics makes the metrics; depth, hsmUp, storeWritable and ocspDue
// are read at each scrape.
func newMetrics(depth func() int, hsmUp, storeWritable func() bool, ocspDue func(max int) (int, error)) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "signerd_batch_size",
			Help: "Requests per signing batch.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}),
		signTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "signerd_hsm_sign_seconds",
			Help: "Time the HSM took per signature, software verification included.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
		hsmErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "signerd_hsm_errors_total",
			Help: "Failed HSM signatures by kind."}, []string{"kind"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "signerd_requests_total",
			Help: "API requests by route, HTTP status and error code."}, []string{"route", "status", "code"}),
		// Labelled by uid: only the few principals that may open the
		// socket ever appear.
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "signerd_connections_open",
			Help: "Connections each peer uid holds open."}, []string{"uid"}),
		connsShed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "signerd_connections_refused_total",
			Help: "Connections refused because their uid held socket.max_connections_per_uid."}, []string{"uid"}),
		// Every tallied refusal, the daemon's and the engine's, whether its
		// audit event was written alone or in a tally (refusals.go); codes
		// are the API's.
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "signerd_refusals_total",
			Help: "Requests and connections refused, by the daemon (audited as api.refused) or the engine, by peer uid and code."}, []string{"uid", "code"}),
	}
	m.clockSteps = prometheus.NewCounter(prometheus.CounterOpts{Name: "signerd_clock_forward_steps_total",
		Help: "Signing times more than clock_max_step after the last one (audited as clock.step)."})
	m.crlSigned = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "signerd_crl_signed_total",
		Help: "CRLs signed on schedule, by issuer and kind (complete, delta)."}, []string{"issuer", "kind"})
	m.crlFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "signerd_crl_failures_total",
		Help: "Failed scheduled CRL signings or publications, by issuer and kind; each is retried."}, []string{"issuer", "kind"})
	m.ocspSigned = prometheus.NewCounter(prometheus.CounterOpts{Name: "signerd_ocsp_responses_signed_total",
		Help: "OCSP responses pre-signed and recorded."})
	m.ocspFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "signerd_ocsp_response_failures_total",
		Help: "OCSP responses whose signing failed; each is due again after a pause."})
	due := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_ocsp_due",
		Help: "OCSP responses due now, counted up to " + strconv.Itoa(ocspDueCounted) + " (NaN if the store cannot be read)."},
		func() float64 {
			n, err := ocspDue(ocspDueCounted)
			if err != nil {
				return math.NaN()
			}
			return float64(n)
		})
	queueDepth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_queue_depth",
		Help: "Requests waiting in the signing queue."}, func() float64 { return float64(depth()) })
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_hsm_up",
		Help: "1 while the HSM signs, 0 while it does not (as the last signature or probe found)."}, func() float64 { return one(hsmUp()) })
	writable := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_store_writable",
		Help: "1 while the store takes writes, 0 from a failed write until a batch is recorded again."}, func() float64 { return one(storeWritable()) })
	m.reg.MustRegister(m.batchSize, m.signTime, m.hsmErrors, m.requests, queueDepth, up, writable, m.connsOpen, m.connsShed, m.refusals, m.clockSteps, m.crlSigned, m.crlFailed,
		m.ocspSigned, m.ocspFailed, due,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// one is 1 for true, 0 for false: a Prometheus boolean.
func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ClockStep counts a forward step of the clock (engine.ClockStepMetrics).
func (m *metrics) ClockStep(time.Duration) { m.clockSteps.Inc() }

// CRLSigned counts a CRL signed on schedule (engine.CRLMetrics).
func (m *metrics) CRLSigned(name engine.CRLName, _ int) {
	m.crlSigned.WithLabelValues(name.Issuer, crlKind(name)).Inc()
}

// CRLFailed counts a failed scheduled signing or publication.
func (m *metrics) CRLFailed(name engine.CRLName) {
	m.crlFailed.WithLabelValues(name.Issuer, crlKind(name)).Inc()
}

func crlKind(name engine.CRLName) string {
	if name.Delta {
		return "delta"
	}
	return "complete"
}

// OCSPSigned counts a batch of OCSP responses (engine.OCSPMetrics).
func (m *metrics) OCSPSigned(signed, failed int) {
	m.ocspSigned.Add(float64(signed))
	m.ocspFailed.Add(float64(failed))
}

func (m *metrics) Batch(size int) { m.batchSize.Observe(float64(size)) }

func (m *metrics) Signature(took time.Duration, err error) {
	m.signTime.Observe(took.Seconds())
	switch {
	case err == nil:
	case errors.Is(err, hsm.ErrTransient):
		m.hsmErrors.WithLabelValues("transient").Inc()
	case errors.Is(err, hsm.ErrBadSignature):
		m.hsmErrors.WithLabelValues("bad_signature").Inc()
	case errors.Is(err, context.DeadlineExceeded):
		m.hsmErrors.WithLabelValues("timeout").Inc()
	default:
		m.hsmErrors.WithLabelValues("other").Inc()
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// recorder remembers what a handler answered, for the request counter.
type recorder struct {
	http.ResponseWriter
	status  int
	code    string
	message string
	// audited: the refusal is already recorded (by the engine, or by the
	// check that refused it).
	audited bool
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (m *metrics) count(route string, rec *recorder) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status), rec.code).Inc()
}
