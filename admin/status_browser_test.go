package admin

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chihaya/chihaya/internal/testenv"
)

// The status page's line colours, as status.html sets them.
var (
	udpColour  = color.NRGBA{0x0b, 0x63, 0xc5, 0xff}
	httpColour = color.NRGBA{0xc2, 0x41, 0x0c, 0xff}
)

const (
	shotW, shotH   = 1000, 800
	browserTimeout = 30 * time.Second
)

// chromium returns the path of Debian's chromium, or skips the test
// (fails it under CI) when there is none.
func chromium(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	testenv.Required(t, "chromium", "apt-get install chromium")
	return ""
}

// runChromium runs a headless chromium on url with the given extra
// flags, each run with a profile of its own, and returns its stdout.
func runChromium(t *testing.T, bin, url string, flags ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--force-device-scale-factor=1",
		"--user-data-dir=" + t.TempDir(),
		"--window-size=1000,800",
	}, flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	cmd.WaitDelay = 5 * time.Second // then stop waiting for its pipes
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(flags, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestStatusPageInChromium renders the status page of a serving Server in
// headless Chromium: the DOM it builds has the page's numbers and chart,
// and a screenshot of it is neither blank nor missing the chart's lines.
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	var f fakeSources
	s := listen(t, Config{}, f.sources("v9.8.7-browser"))
	// Ten minutes of history, with steps, so the chart has long level
	// runs whose pixels are exactly the line's colour.
	now := time.Now()
	for i, r := range []struct{ udp, http uint64 }{{20, 5}, {60, 15}, {35, 30}, {80, 10}} {
		fillRates(s, &f, now.Add(-time.Duration(3-i)*30*sampleEvery), 30, r.udp, r.http)
	}
	serve(t, s)
	url := "http://" + s.Addrs()[0].String() + "/"

	t.Run("dom", func(t *testing.T) {
		dom := string(runChromium(t, bin, url, "--dump-dom"))
		for _, want := range []string{
			"v9.8.7-browser", "IPv4", "IPv6", "1234", "5678", "91011",
			`<svg id="rates"`, `<polyline class="udp"`, `<polyline class="http"`,
			"not configured", "Background work", "lag 1.5s, 13 pending", "backlog 2m3.4s, 24 swarms pending",
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("chromium's DOM lacks %q; DOM:\n%s", want, tail(dom, 3000))
			}
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		shot := filepath.Join(t.TempDir(), "status.png")
		runChromium(t, bin, url, "--screenshot="+shot)
		b, err := os.ReadFile(shot)
		if err != nil {
			t.Fatalf("chromium wrote no screenshot: %v", err)
		}
		if keep := os.Getenv("CHIHAYA_STATUS_PNG"); keep != "" {
			// A copy to look at: CHIHAYA_STATUS_PNG=/tmp/status.png.
			os.WriteFile(keep, b, 0o644)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		checkScreenshot(t, img)
	})
}

func checkScreenshot(t *testing.T, img image.Image) {
	t.Helper()
	if sz := img.Bounds().Size(); sz != image.Pt(shotW, shotH) {
		t.Errorf("screenshot is %v, want %dx%d", sz, shotW, shotH)
	}
	colours := map[color.NRGBA]int{}
	nonWhite := 0
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			colours[c]++
			if c.R < 0xf0 || c.G < 0xf0 || c.B < 0xf0 {
				nonWhite++
			}
		}
	}
	// Text, rules and the chart cover a few percent of the page; a
	// blank or error page has far fewer colours and dark pixels.
	if total := r.Dx() * r.Dy(); nonWhite < total/100 {
		t.Errorf("screenshot has %d non-white pixels of %d: blank?", nonWhite, total)
	}
	if len(colours) < 20 {
		t.Errorf("screenshot has %d distinct colours: blank?", len(colours))
	}
	// Each line's colour fills its legend swatch (12×12) and the level
	// runs of its line.
	for _, c := range []struct {
		name string
		c    color.NRGBA
	}{{"udp", udpColour}, {"http", httpColour}} {
		if n := colours[c.c]; n < 200 {
			t.Errorf("screenshot has %d pixels of the %s line's colour %v, want at least 200", n, c.name, c.c)
		}
	}
}
