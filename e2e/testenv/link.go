// The links of the env, named paths to one cluster (the control plane unless told) through a serve-link proxy that
// tests can break: each keeps its target, ports, pid, log and kubeconfig in <env>/links/NAME/, and `link <command>`
// drives it through its control listener, returning once the proxy has taken the new mode.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	defaultLink  = "default"
	linkProcess  = "proxy"
	linkInfoFile = "link.json"
)

// linkInfo is a link's persisted layout: the cluster it leads to, its client port and its control port, chosen
// once and kept.
type linkInfo struct {
	Port        int    `json:"port"`
	ControlPort int    `json:"controlPort"`
	Target      string `json:"target,omitempty"` // a cluster name; empty (links made before targets) is the control plane
}

// target is the cluster the link leads to.
func (i linkInfo) target() string {
	if i.Target == "" {
		return controlPlane
	}
	return i.Target
}

var linkName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

const linkUsage = `usage: testenv link <command>
  add NAME [CLUSTER]  start the link's proxy (if it does not run) and print its kubeconfig; CLUSTER is app, app2 or
                    controlplane (the default), and a link keeps the cluster it was made for
  cut NAME          blackhole: connections hang, no byte is forwarded, nothing is closed
  reset NAME        refuse: existing connections are reset, new ones refused
  restore NAME      end a cut or reset; connections held by a cut resume where they stopped
  delay MS NAME     add MS of round-trip time (MS/2 each way) to every chunk; 0 removes it (kept across cut/restore)
  remove NAME       stop the link's proxy and forget the link (its kubeconfig goes too)
  status            every link, its port, mode and delay`

func runLink(dir string, args []string) error {
	env, err := load(dir)
	if err != nil {
		return err
	}
	if len(args) == 1 && args[0] == "status" {
		env.printLinks()
		return nil
	}
	command, target := "", controlPlane
	if len(args) == 3 && args[0] == "add" {
		if !slices.Contains(clusterNames, args[2]) {
			return fmt.Errorf("link add: no cluster %q (want one of %v)\n%s", args[2], clusterNames, linkUsage)
		}
		command, target = "add", args[2]
		args = args[:2]
	} else if len(args) == 2 {
		command = map[string]string{
			"add": "add", "remove": "remove", "cut": modeCut, "reset": modeReset, "restore": modeNormal,
		}[args[0]]
	} else if len(args) == 3 && args[0] == "delay" {
		if _, err := strconv.Atoi(args[1]); err != nil {
			return fmt.Errorf("delay wants milliseconds, not %q\n%s", args[1], linkUsage)
		}
		command = "delay " + args[1]
	}
	if command == "" {
		return errors.New(linkUsage)
	}
	name := args[len(args)-1]
	if command == "add" {
		kubeconfig, err := env.addLink(name, target)
		if err == nil {
			fmt.Println(kubeconfig)
		}
		return err
	}
	if _, err := env.readLink(name); err != nil {
		return err
	}
	if command == "remove" {
		return env.removeLink(name)
	}
	state, err := env.linkControl(name, command)
	if err != nil {
		return err
	}
	fmt.Printf("link %s: %s\n", name, describeLink(state))
	return nil
}

func (e *environment) linkDir(name string) string { return filepath.Join(e.dir, "links", name) }
func (e *environment) linkKubeconfig(name string) string {
	return filepath.Join(e.linkDir(name), "kubeconfig")
}
func (e *environment) linkPid(name string) string {
	return filepath.Join(e.linkDir(name), linkProcess+".pid")
}

func (e *environment) readLink(name string) (linkInfo, error) {
	var info linkInfo
	raw, err := os.ReadFile(filepath.Join(e.linkDir(name), linkInfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("no link %q: `e2e/env link add %s` makes it", name, name)
	}
	if err != nil {
		return info, err
	}
	return info, json.Unmarshal(raw, &info)
}

// links lists the names of the env's links.
func (e *environment) links() []string {
	entries, _ := os.ReadDir(filepath.Join(e.dir, "links"))
	var names []string
	for _, entry := range entries {
		if _, err := e.readLink(entry.Name()); err == nil {
			names = append(names, entry.Name())
		}
	}
	sort.Strings(names)
	return names
}

// addLink makes the link to target if it is new, starts its proxy if it does not run, and writes its kubeconfig.
// A link made for another cluster is an error. Safe to run concurrently for the same name: a lock file serializes
// them.
func (e *environment) addLink(name, target string) (string, error) {
	if !linkName.MatchString(name) {
		return "", fmt.Errorf("link name %q: want lower-case letters, digits and dashes", name)
	}
	dir := e.linkDir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	info, err := e.readLink(name)
	if err != nil {
		if info, err = e.newLinkPorts(); err != nil {
			return "", err
		}
		info.Target = target
		raw, _ := json.Marshal(info)
		if err := os.WriteFile(filepath.Join(dir, linkInfoFile), raw, 0o644); err != nil {
			return "", err
		}
	}
	if info.target() != target {
		return "", fmt.Errorf("link %s leads to %s, not %s: remove it first", name, info.target(), target)
	}
	kubeconfig, err := e.kubeconfigText(target, info.Port, target+"-via-"+name)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(e.linkKubeconfig(name), kubeconfig, 0o600); err != nil {
		return "", err
	}
	pidPath, logPath := e.linkPid(name), filepath.Join(dir, linkProcess+".log")
	if _, alive := running(pidPath); !alive {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		if err := spawn(pidPath, logPath, nil, self, "serve-link", "--dir", e.dir, "--name", name); err != nil {
			return "", err
		}
	}
	err = waitFor("link "+name, pidPath, logPath, 10*time.Second, func() error {
		_, err := e.linkControl(name, "status")
		return err
	})
	return e.linkKubeconfig(name), err
}

// removeLink stops the link's proxy and removes its folder.
func (e *environment) removeLink(name string) error {
	unlock, err := lockFile(filepath.Join(e.linkDir(name), "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if err := stop(e.linkPid(name), 5*time.Second); err != nil {
		return err
	}
	return os.RemoveAll(e.linkDir(name))
}

// newLinkPorts picks two free ports that no cluster or other link of the env has recorded.
func (e *environment) newLinkPorts() (linkInfo, error) {
	ports, err := e.newPorts(2)
	if err != nil {
		return linkInfo{}, err
	}
	return linkInfo{Port: ports[0], ControlPort: ports[1]}, nil
}

// linkControl sends one command to a link's proxy and returns the state it answered with.
func (e *environment) linkControl(name, command string) (linkState, error) {
	info, err := e.readLink(name)
	if err != nil {
		return linkState{}, err
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", info.ControlPort), 2*time.Second)
	if err != nil {
		return linkState{}, fmt.Errorf("link %s does not run (`e2e/env link add %s` starts it): %w", name, name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return linkState{}, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return linkState{}, fmt.Errorf("link %s: no answer to %q: %w", name, command, err)
	}
	var reply struct {
		State *linkState `json:"state"`
		Error string     `json:"error"`
	}
	if err := json.Unmarshal(line, &reply); err != nil {
		return linkState{}, err
	}
	if reply.Error != "" || reply.State == nil {
		return linkState{}, fmt.Errorf("link %s: %s: %s", name, command, reply.Error)
	}
	return *reply.State, nil
}

// startLinks starts the default link and every link made before (a restarted env keeps their ports).
func (e *environment) startLinks() error {
	names := e.links()
	if !slices.Contains(names, defaultLink) {
		names = append(names, defaultLink)
	}
	for _, name := range names {
		info, err := e.readLink(name)
		if err != nil {
			info.Target = controlPlane // the default link, made now
		}
		if _, err := e.addLink(name, info.target()); err != nil {
			return err
		}
	}
	return nil
}

// stopLinks stops every link's proxy at once and waits for them to exit.
func (e *environment) stopLinks() error {
	names := e.links()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = stop(e.linkPid(name), 5*time.Second)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (e *environment) printLinks() {
	for _, name := range e.links() {
		info, _ := e.readLink(name)
		state := "stopped"
		if pid, alive := running(e.linkPid(name)); alive {
			state = fmt.Sprintf("running (pid %d)", pid)
			if s, err := e.linkControl(name, "status"); err == nil {
				state += ", " + describeLink(s)
			}
		}
		fmt.Printf("link %-20s to %-12s port %-6d %s\n", name, info.target(), info.Port, state)
	}
}

func describeLink(s linkState) string {
	return fmt.Sprintf("mode %s, delay %dms, %d connections", s.Mode, s.DelayMs, s.Conns)
}

// lockFile takes an exclusive flock on path until the returned func is called.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
