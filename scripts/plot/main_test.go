package main

import (
	"strings"
	"testing"
)

const sample = `## medians (ratio = chihaya / opentracker)
UDP announce req/s                 199751         165891     1.20
MEDIAN announce_rps chihaya=199751 opentracker=165891 ratio=1.20
MEDIAN announce_p99 chihaya=1488 opentracker=920 ratio=1.62
MEDIAN scrape_rps chihaya=239997 opentracker=191671 ratio=1.25
MEDIAN http_rps chihaya=- opentracker=- ratio=-
`

func TestRun(t *testing.T) {
	var b strings.Builder
	if err := run(strings.NewReader(sample), &b); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	for _, want := range []string{"<svg ", "</svg>", "UDP announces/s", "199,751", "165,891", "1.20×", "UDP scrapes/s", "1.25×", "vs opentracker"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if strings.Contains(svg, "HTTP") || strings.Contains(svg, "1,488") {
		t.Error("SVG draws a metric that was not measured or is not a throughput")
	}
}

func TestRunWithoutMedians(t *testing.T) {
	if err := run(strings.NewReader("nothing here\n"), new(strings.Builder)); err == nil {
		t.Error("run without MEDIAN lines succeeded, want an error")
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}
