// Package fuzz holds the fuzz targets for every parser that reads bytes
// from the network, and their seed corpora under testdata/fuzz/<Target>/.
// It has no code of its own: the targets live in *_test.go files and
// reach the parsers only through their packages' exported API, as any
// caller would.
//
// `go test ./fuzz` replays the seeds and the committed corpus; explore
// with, for example,
//
//	go test ./fuzz -run='^$' -fuzz='^FuzzParseAnnounce$' -fuzztime=2m
//
// Each target checks that its parser does not panic, that it refuses bad
// input with its documented error type, that it agrees with a slow
// reference decoder written here, and that whatever it accepts survives
// an encode and parse round trip. An input that once broke a parser is
// committed to the corpus under a name that says what it found.
package fuzz
