package private

import (
	"strings"
	"testing"
	"time"
)

func TestAccountantConfigDefaults(t *testing.T) {
	var c AccountantConfig
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Interval != 5*time.Second || c.ShutdownTimeout != 10*time.Second || c.MaxBackoff != time.Minute ||
		c.PeerLifetime != 31*time.Minute || c.Timeout != 30*time.Second || c.Logger == nil {
		t.Errorf("defaults = %+v", c)
	}
	bad := []struct {
		c     AccountantConfig
		field string
	}{
		{AccountantConfig{Interval: time.Millisecond}, "Interval"},
		{AccountantConfig{Interval: 2 * time.Hour}, "Interval"},
		{AccountantConfig{MaxBackoff: -1}, "MaxBackoff"},
		{AccountantConfig{ShutdownTimeout: -1}, "ShutdownTimeout"},
		{AccountantConfig{Timeout: -1}, "Timeout"},
		{AccountantConfig{PeerLifetime: time.Millisecond}, "PeerLifetime"},
	}
	for _, tt := range bad {
		if err := tt.c.setDefaults(); err == nil || !strings.Contains(err.Error(), "AccountantConfig."+tt.field) {
			t.Errorf("setDefaults(%+v) = %v, want an error naming %s", tt.c, err, tt.field)
		}
	}
	if _, err := NewAccountant(newMemStore(), AccountantConfig{Interval: -1}); err == nil || !strings.Contains(err.Error(), "Interval") {
		t.Errorf("NewAccountant with Interval -1 = %v, want an error naming Interval", err)
	}
}
