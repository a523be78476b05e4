// composecheck loads a Compose file with compose-go, the Compose Specification's
// reference implementation: it validates the file against the specification's
// JSON schema and its own semantic rules, offline, with no Docker engine, and
// prints the normalised project as JSON for the project's own assertions.
//
// Usage: [COMPOSE_PROFILES=cluster] composecheck docker-compose.yaml > project.json
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck COMPOSE_FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{os.Args[1]},
		cli.WithName("stedi"),
		cli.WithOsEnv,
		// COMPOSE_PROFILES selects profiles, as `docker compose --profile` does.
		cli.WithDefaultProfiles(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid options:", err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid compose file:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot print the project:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
