package main

import (
	"context"
	"testing"

	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestComposesPatchesAndDetails(t *testing.T) {
	input := map[string]any{
		"apiVersion": "function.claimsync.dev/v1alpha1", "kind": "Resources",
		"resources": []any{map[string]any{
			"name": "info",
			"base": map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "data": map[string]any{"port": "5432"}},
			"patches": []any{
				map[string]any{"fromFieldPath": "spec.id", "toFieldPath": "metadata.name", "format": "kc-%s"},
				map[string]any{"fromFieldPath": "spec.nodes", "toFieldPath": "data.nodes", "format": "%s"},
				map[string]any{"fromFieldPath": "spec.absent", "toFieldPath": "data.absent"},
				map[string]any{"type": "ToCompositeFieldPath", "fromFieldPath": "metadata.name", "toFieldPath": "status.name"},
			},
			"connectionDetails": []any{
				map[string]any{"name": "user", "value": "postgres"},
				map[string]any{"name": "port", "fromFieldPath": "data.port"},
				map[string]any{"name": "missing", "fromFieldPath": "data.missing"},
			},
		}},
	}
	xr := map[string]any{"apiVersion": "x.test/v1", "kind": "XThing", "spec": map[string]any{"id": "a", "nodes": 3.0}}
	req := &fnv1.RunFunctionRequest{
		Meta:     &fnv1.RequestMeta{Tag: "t"},
		Input:    mustStruct(t, input),
		Observed: &fnv1.State{Composite: &fnv1.Resource{Resource: mustStruct(t, xr)}},
	}
	rsp, err := composer{}.RunFunction(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(rsp.GetResults()) > 0 {
		t.Fatalf("results: %v", rsp.GetResults())
	}
	info := rsp.GetDesired().GetResources()["info"]
	if info.GetReady() != fnv1.Ready_READY_TRUE {
		t.Errorf("ready: %v", info.GetReady())
	}
	cm := info.GetResource().AsMap()
	if name, _ := get(cm, "metadata.name"); name != "kc-a" {
		t.Errorf("metadata.name: %v", name)
	}
	if nodes, _ := get(cm, "data.nodes"); nodes != "3" {
		t.Errorf("data.nodes: %#v", nodes)
	}
	if _, ok := get(cm, "data.absent"); ok {
		t.Error("a patch from a missing field set data.absent")
	}
	composite := rsp.GetDesired().GetComposite()
	if name, _ := get(composite.GetResource().AsMap(), "status.name"); name != "kc-a" {
		t.Errorf("status.name: %v", name)
	}
	details := composite.GetConnectionDetails()
	if string(details["user"]) != "postgres" || string(details["port"]) != "5432" || len(details) != 2 {
		t.Errorf("connection details: %q", details)
	}
}

func TestBadInputIsFatal(t *testing.T) {
	input := map[string]any{"resources": []any{map[string]any{"base": map[string]any{}}}}
	rsp, err := composer{}.RunFunction(context.Background(), &fnv1.RunFunctionRequest{Input: mustStruct(t, input)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rsp.GetResults()) != 1 || rsp.GetResults()[0].GetSeverity() != fnv1.Severity_SEVERITY_FATAL {
		t.Fatalf("results: %v", rsp.GetResults())
	}
}
