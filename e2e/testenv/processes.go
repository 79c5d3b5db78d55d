// Starting, finding and stopping the env's background processes by their pid files, and waiting for them to
// be ready. Every process runs detached in its own session with its output in a log file beside its pid file.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// spawn starts a detached process and records its pid and start time.
func spawn(pidPath, logPath string, extraEnv []string, bin string, args ...string) error {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "\n==== %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	// The child exists from here on (if only as a zombie), so its start time can be read.
	p, _ := inspect(pid)
	// Reap it if it dies while this command still runs, so that a quick crash is seen as one.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(pidPath, fmt.Appendf(nil, "%d %s\n", pid, p.start), 0o644)
}

// procInfo is what /proc says about a pid: its state letter and start time (in clock ticks since boot).
type procInfo struct {
	state, start string
}

// inspect reads /proc/<pid>/stat; false if there is no such process (any more).
func inspect(pid int) (procInfo, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	// The fields after "(comm)": state is the first, starttime (field 22 of stat) the 20th.
	fields := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
	if len(fields) < 20 {
		return procInfo{}, false
	}
	return procInfo{state: string(fields[0]), start: string(fields[19])}, true
}

// readPid reads a pid file: "<pid> <start time>", or only "<pid>" as written before start times were recorded.
func readPid(pidPath string) (pid int, start string, ok bool) {
	raw, err := os.ReadFile(pidPath)
	if err != nil {
		return 0, "", false
	}
	fields := strings.Fields(string(raw))
	if len(fields) == 0 {
		return 0, "", false
	}
	pid, err = strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	if len(fields) > 1 {
		start = fields[1]
	}
	return pid, start, true
}

// ours tells whether pid is still the process that was recorded with this start time. A recycled pid has
// another start time; for a pid file without one, the process must at least be testenv or crossplane.
func ours(pid int, start string, p procInfo) bool {
	if start != "" {
		return p.start == start
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && (bytes.Contains(cmdline, []byte("testenv")) || bytes.Contains(cmdline, []byte("crossplane")))
}

// running returns the pid recorded in pidPath if that process is alive and is the one recorded.
func running(pidPath string) (int, bool) {
	pid, start, ok := readPid(pidPath)
	if !ok {
		return 0, false
	}
	p, exists := inspect(pid)
	// A zombie has exited; only its parent has not reaped it yet.
	return pid, exists && p.state != "Z" && ours(pid, start, p)
}

// exited tells whether the recorded process is gone for good: no such process, another one under its pid, or
// a zombie whose every thread has exited too (a zombie leader's threads may still hold its files and ports).
func exited(pid int, start string) bool {
	p, exists := inspect(pid)
	if !exists || !ours(pid, start, p) {
		return true
	}
	if p.state != "Z" {
		return false
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err != nil || len(tasks) <= 1
}

// stop ends the process of pidPath (SIGTERM, then SIGKILL after grace) and returns once it has exited, or an
// error if it outlives the SIGKILL by 10s. Safe to run concurrently for the same pid file (e.g. by the owner
// watch's down and a down of the user's).
func stop(pidPath string, grace time.Duration) error {
	pid, start, ok := readPid(pidPath)
	if !ok || exited(pid, start) {
		return removePid(pidPath)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	if _, alive := running(pidPath); alive {
		_ = proc.Signal(syscall.SIGTERM)
	}
	if waitExited(pid, start, grace) {
		return removePid(pidPath)
	}
	_ = proc.Signal(syscall.SIGKILL)
	if waitExited(pid, start, 10*time.Second) {
		return removePid(pidPath)
	}
	return fmt.Errorf("pid %d (%s) is still there 10s after SIGKILL", pid, pidPath)
}

func waitExited(pid int, start string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !exited(pid, start) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func removePid(pidPath string) error {
	if err := os.Remove(pidPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// waitPortsFree returns once every port can be listened on again, or errs after timeout naming those that
// cannot: a restarted env binds the same ports, a new one may be given them.
func waitPortsFree(ports []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, port := range ports {
		for {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				_ = l.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("port %d still in use %s after the env stopped: %w", port, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// waitFor polls check until it succeeds, the process of pidPath dies, or the deadline passes.
func waitFor(what, pidPath, logPath string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if pidPath != "" {
			if _, alive := running(pidPath); !alive {
				return fmt.Errorf("%s exited; last lines of %s:\n%s", what, logPath, tail(logPath, 25))
			}
		}
		if time.Now().After(deadline) {
			if logPath == "" {
				return fmt.Errorf("%s not ready after %s: %v", what, timeout, last)
			}
			return fmt.Errorf("%s not ready after %s (%v); last lines of %s:\n%s", what, timeout, last, logPath, tail(logPath, 25))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(path string, lines int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// watchOwner stops the env once the owner process (a test run) has exited: it is gone, or a zombie that nobody
// reaps (as under an init that does not), or its pid now belongs to another process.
func watchOwner(dir string, ownerPID int) error {
	if ownerPID <= 0 {
		return errors.New("--pid is required")
	}
	owner, exists := inspect(ownerPID)
	for exists && owner.state != "Z" {
		time.Sleep(time.Second)
		var now procInfo
		now, exists = inspect(ownerPID)
		if now.start != owner.start {
			exists = false
		}
		owner.state = now.state
	}
	return down(dir, false)
}
