//go:build !linux

package main

import "net"

const maxGSOSegments = 1

func gsoSupported(*net.UDPConn) bool { return false }

func gsoControl(int) []byte { return nil }

func gsoSize([]byte) int { return 0 }
