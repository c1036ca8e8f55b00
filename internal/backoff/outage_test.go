package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestOutageRun(t *testing.T) {
	var o Outage
	t0 := time.Unix(1000, 0)
	if _, _, ok := o.End(t0); ok {
		t.Fatal("End without a failure reports a run")
	}
	if !o.Fail(t0) {
		t.Fatal("first Fail did not start a run")
	}
	if o.Fail(t0.Add(time.Second)) || !o.Failing() {
		t.Fatal("second Fail started a new run, or the run is not failing")
	}
	lasted, n, ok := o.End(t0.Add(3 * time.Second))
	if !ok || lasted != 3*time.Second || n != 2 {
		t.Fatalf("End = %v, %d, %v; want 3s, 2, true", lasted, n, ok)
	}
	if o.Failing() {
		t.Fatal("still failing after End")
	}
}

func TestRoundsRetriesUntilEnoughSuccesses(t *testing.T) {
	calls, fails := 0, 3
	err := Rounds(context.Background(), Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond}, 2, func(context.Context) error {
		calls++
		if calls%2 == 1 && fails > 0 {
			fails--
			return errors.New("down")
		}
		return nil
	})
	if err != nil || fails != 1 {
		t.Fatalf("Rounds = %v after %d calls (%d failures left)", err, calls, fails)
	}
}

func TestRoundsStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	down := errors.New("down")
	err := Rounds(ctx, Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}, 1, func(context.Context) error { return down })
	if err != down {
		t.Fatalf("Rounds = %v, want the last failure", err)
	}
}
