package sidecar

import (
	"context"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// watchFreshness fails readiness (gRPC health NOT_SERVING, /health?bundles 500, keygate_bundle_stale 1)
// while the bundle server has not confirmed the active bundle for longer than MaxBundleAge, and restores it
// when a poll succeeds again. Checks keep being answered from the bundle either way.
func (s *Sidecar) watchFreshness(ctx context.Context) {
	age := s.engine.maxAge
	if age <= 0 {
		return
	}
	tick := min(age/4, time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.updateFreshness(now)
		}
	}
}

func (s *Sidecar) updateFreshness(now time.Time) {
	stale := s.engine.isStale(now)
	if stale == s.engine.stale.Load() {
		return
	}
	s.engine.stale.Store(stale)
	if stale {
		s.metrics.stale.Set(1)
		s.logger.Warn("bundle older than max_bundle_age: readiness fails", "max_bundle_age", s.engine.maxAge,
			"last_success", time.Unix(0, s.engine.lastOK.Load()).UTC(), "revision", s.Revision())
	} else {
		s.metrics.stale.Set(0)
		s.logger.Info("bundle fresh again: ready", "revision", s.Revision())
	}
	if !s.ready.Load() {
		return
	}
	st := healthpb.HealthCheckResponse_SERVING
	if stale {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
}
