package main

import "time"

// A pacer holds one worker to a request rate (-rate): a token bucket
// that fills at rate tokens a second, up to burst. A nil pacer lets
// every request through, which is the default (-rate 0).
type pacer struct {
	perToken time.Duration // time to earn one token
	burst    float64
	tokens   float64
	last     time.Duration // when tokens was brought up to date
}

// newPacer returns a pacer for rate requests a second that may send
// burst at once after a pause, or nil if rate is 0 (no limit). Its
// bucket starts full.
func newPacer(rate float64, burst int) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{
		perToken: time.Duration(float64(time.Second) / rate),
		burst:    float64(max(burst, 1)),
		tokens:   float64(max(burst, 1)),
	}
}

func (p *pacer) refill(now time.Duration) {
	if now > p.last {
		p.tokens = min(p.burst, p.tokens+float64(now-p.last)/float64(p.perToken))
		p.last = now
	}
}

// take spends a token if one is there at now, and says whether it did.
func (p *pacer) take(now time.Duration) bool {
	if p == nil {
		return true
	}
	p.refill(now)
	if p.tokens < 1 {
		return false
	}
	p.tokens--
	return true
}

// wait returns how long after now the next token is earned (0 if one
// is there already, or there is no limit).
func (p *pacer) wait(now time.Duration) time.Duration {
	if p == nil {
		return 0
	}
	p.refill(now)
	if p.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - p.tokens) * float64(p.perToken))
}
