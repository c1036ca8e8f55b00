// Command plot draws scripts/compare's medians as an SVG bar chart:
// for each throughput metric, chihaya's bar beside the other tracker's
// (opentracker, or the baseline of --against), each pair on its own
// scale, with the values and their ratio written out.
//
//	scripts/compare | tee compare.out
//	go run ./scripts/plot <compare.out >docs/compare.svg
//
// It reads the MEDIAN lines of the compare output from stdin, ignores
// everything else, and writes the SVG to stdout. Metrics the run did not
// measure (see compare --only) are left out.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"html"
	"io"
	"os"
	"strconv"
	"strings"
)

// metrics are the rows drawn, in order: MEDIAN key and label. Higher is
// better for all of them.
var metrics = []struct{ key, label string }{
	{"announce_rps", "UDP announces/s"},
	{"announce_percore", "UDP announces/s per tracker CPU"},
	{"scrape_rps", "UDP scrapes/s"},
	{"scrape_percore", "UDP scrapes/s per tracker CPU"},
	{"http_rps", "HTTP announces/s"},
	{"http_percore", "HTTP announces/s per tracker CPU"},
}

// A median is one MEDIAN line: chihaya's value and the other's.
type median struct {
	chihaya, other float64
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(r io.Reader, w io.Writer) error {
	meds, other, err := parse(r)
	if err != nil {
		return err
	}
	if len(meds) == 0 {
		return errors.New("no MEDIAN lines of a throughput metric on stdin (is it scripts/compare's output?)")
	}
	_, err = io.WriteString(w, draw(meds, other))
	return err
}

// parse reads the MEDIAN lines, "MEDIAN key chihaya=X NAME=Y ratio=Z",
// and returns them by key with NAME, the tracker compared with.
func parse(r io.Reader) (map[string]median, string, error) {
	meds := make(map[string]median)
	other := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != "MEDIAN" {
			continue
		}
		var m median
		okC, okO := false, false
		for _, kv := range f[2:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "ratio" {
				continue
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				break // "-": not measured
			}
			if k == "chihaya" {
				m.chihaya, okC = x, true
			} else {
				m.other, okO = x, true
				other = k
			}
		}
		if okC && okO {
			meds[f[1]] = m
		}
	}
	return meds, other, sc.Err()
}

// Layout, in SVG user units (pixels).
const (
	width    = 760
	labelW   = 250 // metric labels on the left
	barMaxW  = 380 // the longer bar of a pair
	barH     = 18
	pairGap  = 4  // between the two bars of a pair
	groupGap = 22 // between pairs
	top      = 56
)

const (
	colorChihaya = "#2b6cb0"
	colorOther   = "#a0aec0"
)

func draw(meds map[string]median, other string) string {
	var b strings.Builder
	rows := 0
	for _, m := range metrics {
		if _, ok := meds[m.key]; ok {
			rows++
		}
	}
	height := top + rows*(2*barH+pairGap+groupGap) + 10
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">chihaya vs %s: throughput, medians of scripts/compare (higher is better)</text>`+"\n", html.EscapeString(other))
	legend := func(x int, color, name string) {
		fmt.Fprintf(&b, `<rect x="%d" y="32" width="12" height="12" fill="%s"/><text x="%d" y="43">%s</text>`+"\n", x, color, x+16, html.EscapeString(name))
	}
	legend(10, colorChihaya, "chihaya")
	legend(100, colorOther, other)

	y := top
	for _, m := range metrics {
		med, ok := meds[m.key]
		if !ok {
			continue
		}
		scale := max(med.chihaya, med.other)
		if scale <= 0 {
			scale = 1
		}
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+barH+pairGap/2+4, html.EscapeString(m.label))
		for i, v := range []float64{med.chihaya, med.other} {
			color := colorChihaya
			if i == 1 {
				color = colorOther
			}
			by := y + i*(barH+pairGap)
			w := int(v / scale * barMaxW)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", labelW, by, w, barH, color)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", labelW+w+6, by+barH-5, thousands(v))
		}
		if med.other > 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%.2f×</text>`+"\n", width-60, y+barH+pairGap/2+4, med.chihaya/med.other)
		}
		y += 2*barH + pairGap + groupGap
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
