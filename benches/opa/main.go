// Command opa-bench is the OPA peer of benches/policy.rs: it prepares the
// Tollgate risk policy once with OPA's rego.PrepareForEval, then times N
// evaluations of data.tollgate.risk.decision for each input in a JSON file
// ([{"name": ..., "input": {...}}], the file the Rust bench reads too) and
// prints one JSON line per input:
//
//	{"input": "small_tighten", "iterations": 20000, "ns_per_op": 41234}
//
// Usage (from this directory):
//
//	go run . [-policy ../../policies/risk.rego] [-n 20000] inputs.json
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
)

type namedInput struct {
	Name  string `json:"name"`
	Input any    `json:"input"`
}

func main() {
	policyPath := flag.String("policy", "../../policies/risk.rego", "risk policy to evaluate")
	iterations := flag.Int("n", 20000, "timed evaluations per input")
	warmup := flag.Int("warmup", 1000, "untimed evaluations per input before timing")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: opa-bench [-policy FILE] [-n N] INPUTS.json")
		os.Exit(2)
	}
	if err := run(*policyPath, flag.Arg(0), *iterations, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "opa-bench:", err)
		os.Exit(1)
	}
}

func run(policyPath, inputsPath string, iterations, warmup int) error {
	policy, err := os.ReadFile(policyPath)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(inputsPath)
	if err != nil {
		return err
	}
	// Numbers stay json.Number, as `opa eval` reads its input.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var inputs []namedInput
	if err := dec.Decode(&inputs); err != nil {
		return fmt.Errorf("%s: %w", inputsPath, err)
	}

	ctx := context.Background()
	prepared, err := rego.New(
		rego.Query("data.tollgate.risk.decision"),
		rego.Module(policyPath, string(policy)),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return err
	}

	out := json.NewEncoder(os.Stdout)
	for _, in := range inputs {
		eval := func() error {
			rs, err := prepared.Eval(ctx, rego.EvalInput(in.Input))
			if err != nil {
				return err
			}
			if len(rs) != 1 || len(rs[0].Expressions) != 1 {
				return fmt.Errorf("%s: decision is undefined", in.Name)
			}
			return nil
		}
		for i := 0; i < warmup; i++ {
			if err := eval(); err != nil {
				return err
			}
		}
		start := time.Now()
		for i := 0; i < iterations; i++ {
			if err := eval(); err != nil {
				return err
			}
		}
		elapsed := time.Since(start)
		line := map[string]any{
			"input":      in.Name,
			"iterations": iterations,
			"ns_per_op":  elapsed.Nanoseconds() / int64(iterations),
		}
		if err := out.Encode(line); err != nil {
			return err
		}
	}
	return nil
}
