// Tests of the process bookkeeping that `down` relies on: a stopped process has exited when stop returns, a
// recycled pid is not taken for ours, and waitPortsFree waits for a listener to go away.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStopReturnsOnceTheProcessHasExited(t *testing.T) {
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "sleep.pid")
	if err := spawn(pidPath, filepath.Join(dir, "sleep.log"), nil, "sleep", "60"); err != nil {
		t.Fatal(err)
	}
	pid, alive := running(pidPath)
	if !alive {
		t.Fatalf("pid %d not running right after spawn", pid)
	}
	_, start, _ := readPid(pidPath)
	if err := stop(pidPath, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !exited(pid, start) {
		t.Fatalf("pid %d has not exited after stop", pid)
	}
	if _, err := os.Stat(pidPath); !os.IsNotExist(err) {
		t.Fatalf("pid file still there: %v", err)
	}
	// A second stop, as by a concurrent down, is no error.
	if err := stop(pidPath, time.Second); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}

func TestRecycledPidIsNotOurs(t *testing.T) {
	pidPath := filepath.Join(t.TempDir(), "other.pid")
	// This test's own pid with a start time it does not have: the recorded process is gone.
	if err := os.WriteFile(pidPath, fmt.Appendf(nil, "%d 1\n", os.Getpid()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, alive := running(pidPath); alive {
		t.Fatal("a pid with another start time counts as running")
	}
	if err := stop(pidPath, time.Second); err != nil {
		t.Fatal(err)
	}
	// Still alive: stop did not signal this process.
}

func TestWaitPortsFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := waitPortsFree([]int{port}, 200*time.Millisecond); err == nil {
		t.Fatal("a bound port counts as free")
	}
	time.AfterFunc(300*time.Millisecond, func() { _ = l.Close() })
	if err := waitPortsFree([]int{port}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
