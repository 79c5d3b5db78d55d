package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Input is what a Composition's pipeline step gives the function (apiVersion function.claimsync.dev/v1alpha1,
// kind Resources): the objects to compose.
type Input struct {
	Resources []Template `json:"resources"`
}

// Template is one composed object: a base, the patches that fill it in from the composite (and the composite's
// status from it), and the connection details it contributes to the composite.
type Template struct {
	// Name keys the object among the composite's composed resources; Crossplane keeps it in an annotation.
	Name              string             `json:"name"`
	Base              map[string]any     `json:"base"`
	Patches           []Patch            `json:"patches,omitempty"`
	ConnectionDetails []ConnectionDetail `json:"connectionDetails,omitempty"`
}

// Patch copies one field. FromCompositeFieldPath (the default) copies from the composite to the composed object;
// ToCompositeFieldPath copies from the composed object to the composite (its status). A missing source field
// skips the patch, as Crossplane's native patches do.
type Patch struct {
	Type          string `json:"type,omitempty"`
	FromFieldPath string `json:"fromFieldPath"`
	ToFieldPath   string `json:"toFieldPath"`
	// Format, when set, turns the value into a string: the value's text is formatted with it ("kc-%s"; "%s"
	// converts a number to a string).
	Format string `json:"format,omitempty"`
}

const (
	fromComposite = "FromCompositeFieldPath"
	toComposite   = "ToCompositeFieldPath"
)

// ConnectionDetail is one key of the composite's connection details: a fixed value, or a field of the composed
// object (skipped while the field is missing).
type ConnectionDetail struct {
	Name          string  `json:"name"`
	Value         *string `json:"value,omitempty"`
	FromFieldPath string  `json:"fromFieldPath,omitempty"`
}

// composer serves RunFunction.
type composer struct {
	fnv1.UnimplementedFunctionRunnerServiceServer
}

// RunFunction composes every template of the input. Each composed object is reported ready at once, as the
// native `readinessChecks: [{type: None}]` did: the objects composed here (Namespaces, Records) have no Ready
// condition to wait for.
func (composer) RunFunction(_ context.Context, req *fnv1.RunFunctionRequest) (*fnv1.RunFunctionResponse, error) {
	rsp := &fnv1.RunFunctionResponse{
		Meta:    &fnv1.ResponseMeta{Tag: req.GetMeta().GetTag(), Ttl: durationpb.New(time.Minute)},
		Desired: req.GetDesired(),
		Context: req.GetContext(),
	}
	if err := compose(req, rsp); err != nil {
		rsp.Results = append(rsp.Results, &fnv1.Result{Severity: fnv1.Severity_SEVERITY_FATAL, Message: err.Error()})
	}
	return rsp, nil
}

func compose(req *fnv1.RunFunctionRequest, rsp *fnv1.RunFunctionResponse) error {
	var input Input
	raw, err := req.GetInput().MarshalJSON()
	if err != nil {
		return fmt.Errorf("cannot read the input: %w", err)
	}
	if err := json.Unmarshal(raw, &input); err != nil {
		return fmt.Errorf("cannot read the input: %w", err)
	}
	xr := req.GetObserved().GetComposite().GetResource().AsMap()

	if rsp.Desired == nil {
		rsp.Desired = &fnv1.State{}
	}
	if rsp.Desired.Composite == nil {
		rsp.Desired.Composite = &fnv1.Resource{}
	}
	if rsp.Desired.Resources == nil {
		rsp.Desired.Resources = map[string]*fnv1.Resource{}
	}
	// The composite's desired state holds only what the pipeline sets: Crossplane applies it to the XR's status.
	desiredXR := rsp.Desired.Composite.GetResource().AsMap()
	details := rsp.Desired.Composite.GetConnectionDetails()
	if details == nil {
		details = map[string][]byte{}
	}

	for _, t := range input.Resources {
		if t.Name == "" {
			return fmt.Errorf("a resource template has no name")
		}
		desired, err := deepCopy(t.Base)
		if err != nil {
			return fmt.Errorf("resource %q: %w", t.Name, err)
		}
		for _, p := range t.Patches {
			if p.Type == "" || p.Type == fromComposite {
				if err := patch(xr, desired, p); err != nil {
					return fmt.Errorf("resource %q: %w", t.Name, err)
				}
			}
		}
		// What the other direction reads: the object as Crossplane last observed it, or, before it exists (or
		// has the field), as it is about to be applied, so that the first reconcile already has it all.
		observed := req.GetObserved().GetResources()[t.Name].GetResource().AsMap()
		source := func(path string) (any, bool) {
			if v, ok := get(observed, path); ok {
				return v, true
			}
			return get(desired, path)
		}
		for _, p := range t.Patches {
			switch p.Type {
			case "", fromComposite:
			case toComposite:
				if v, ok := source(p.FromFieldPath); ok {
					if err := setFormatted(desiredXR, p, v); err != nil {
						return fmt.Errorf("resource %q: %w", t.Name, err)
					}
				}
			default:
				return fmt.Errorf("resource %q: unknown patch type %q", t.Name, p.Type)
			}
		}
		for _, d := range t.ConnectionDetails {
			switch {
			case d.Value != nil:
				details[d.Name] = []byte(*d.Value)
			case d.FromFieldPath != "":
				if v, ok := source(d.FromFieldPath); ok {
					details[d.Name] = []byte(text(v))
				}
			default:
				return fmt.Errorf("resource %q: connection detail %q has neither value nor fromFieldPath", t.Name, d.Name)
			}
		}
		s, err := structpb.NewStruct(desired)
		if err != nil {
			return fmt.Errorf("resource %q: %w", t.Name, err)
		}
		rsp.Desired.Resources[t.Name] = &fnv1.Resource{Resource: s, Ready: fnv1.Ready_READY_TRUE}
	}
	s, err := structpb.NewStruct(desiredXR)
	if err != nil {
		return fmt.Errorf("the composite's desired status: %w", err)
	}
	rsp.Desired.Composite.Resource = s
	rsp.Desired.Composite.ConnectionDetails = details
	return nil
}

// patch applies a FromCompositeFieldPath patch from the composite to the composed object.
func patch(xr, desired map[string]any, p Patch) error {
	v, ok := get(xr, p.FromFieldPath)
	if !ok {
		return nil
	}
	return setFormatted(desired, p, v)
}

func setFormatted(into map[string]any, p Patch, v any) error {
	if p.Format != "" {
		v = fmt.Sprintf(p.Format, text(v))
	}
	return set(into, p.ToFieldPath, v)
}

// text is a value as a string: numbers without a fraction as integers (JSON numbers arrive as float64).
func text(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		if v == float64(int64(v)) {
			return strconv.FormatInt(int64(v), 10)
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		raw, _ := json.Marshal(v)
		return string(raw)
	}
}

// get reads a dotted field path (no list indices) of an object.
func get(obj map[string]any, path string) (any, bool) {
	var cur any = obj
	for _, key := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[key]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

// set writes a dotted field path (no list indices) of an object, making the objects on the way.
func set(obj map[string]any, path string, v any) error {
	keys := strings.Split(path, ".")
	cur := obj
	for _, key := range keys[:len(keys)-1] {
		next, ok := cur[key].(map[string]any)
		if !ok {
			if cur[key] != nil {
				return fmt.Errorf("cannot set %s: %s is not an object", path, key)
			}
			next = map[string]any{}
			cur[key] = next
		}
		cur = next
	}
	cur[keys[len(keys)-1]] = v
	return nil
}

func deepCopy(obj map[string]any) (map[string]any, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	return out, json.Unmarshal(raw, &out)
}
