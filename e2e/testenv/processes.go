// Starting, finding and stopping the env's background processes by their pid files, and waiting for them to
// be ready. Every process runs detached in its own session with its output in a log file beside its pid file.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// spawn starts a detached process and records its pid.
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
	// Reap it if it dies while this command still runs, so that a quick crash is seen as one.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(pidPath, []byte(strconv.Itoa(pid)), 0o644)
}

// running returns the pid recorded in pidPath if that process is alive and is one of ours.
func running(pidPath string) (int, bool) {
	raw, err := os.ReadFile(pidPath)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pid, false
	}
	// A zombie has exited; only its parent has not reaped it yet.
	if fields := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:]); len(fields) > 0 && string(fields[0]) == "Z" {
		return pid, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return pid, false
	}
	// Guard against a recycled pid: the process must be testenv or crossplane.
	return pid, bytes.Contains(cmdline, []byte("testenv")) || bytes.Contains(cmdline, []byte("crossplane"))
}

// stop ends the process of pidPath: SIGTERM, then SIGKILL after grace.
func stop(pidPath string, grace time.Duration) error {
	pid, alive := running(pidPath)
	if !alive {
		_ = os.Remove(pidPath)
		return nil
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	_ = proc.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if _, alive := running(pidPath); !alive {
			return os.Remove(pidPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = proc.Signal(syscall.SIGKILL)
	for range 100 {
		if _, alive := running(pidPath); !alive {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return os.Remove(pidPath)
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

// watchOwner stops the env once the owner process (a test run) has exited.
func watchOwner(dir string, ownerPID int) error {
	if ownerPID <= 0 {
		return errors.New("--pid is required")
	}
	for {
		if err := syscall.Kill(ownerPID, 0); errors.Is(err, syscall.ESRCH) {
			return down(dir, false)
		}
		time.Sleep(time.Second)
	}
}
