package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/ferrygw/ferry/internal/keyring"
)

const keyUsage = `usage: ferry key new -f FILE    add a new key to FILE (created mode 0600 if
                               missing); it seals the buffer from the next start
       ferry key list -f FILE   the key ids of FILE, oldest first, the active one marked
`

// runKey manages the key file that encrypts the buffer at rest
// (buffer.encryption.key_file). Keys are only ever written to the file:
// the commands print key ids, never keys.
func runKey(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keyUsage)
		return 2
	}
	sub := args[0]
	if sub != "new" && sub != "list" {
		fmt.Fprintf(stderr, "ferry key: unknown command %q\n%s", sub, keyUsage)
		return 2
	}
	fs := flag.NewFlagSet("key "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "key file (buffer.encryption.key_file)")
	fs.Usage = func() {
		fmt.Fprint(stderr, keyUsage)
		fs.PrintDefaults()
	}
	if fs.Parse(args[1:]) != nil {
		return 2
	}
	if *file == "" || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if sub == "new" {
		return keyNew(*file, stdout, stderr)
	}
	return keyList(*file, stdout, stderr)
}

func keyNew(file string, stdout, stderr io.Writer) int {
	id, err := keyring.Generate(file, nil)
	if err != nil {
		fmt.Fprintln(stderr, "ferry key new:", err)
		return 1
	}
	r, err := keyring.Load(file)
	if err != nil { // just written: only a concurrent change gets here
		fmt.Fprintln(stderr, "ferry key new:", err)
		return 1
	}
	fmt.Fprintln(stdout, id)
	if n := len(r.IDs()); n > 1 {
		fmt.Fprintf(stderr, "key %s added to %s: it seals new events once ferry restarts; the %d older keys still open what they sealed\n", id, file, n-1)
	} else {
		fmt.Fprintf(stderr, "key %s written to %s: back this file up, the buffer cannot be read without it\n", id, file)
	}
	return 0
}

func keyList(file string, stdout, stderr io.Writer) int {
	r, err := keyring.Load(file)
	if err != nil {
		fmt.Fprintln(stderr, "ferry key list:", err)
		return 1
	}
	for _, id := range r.IDs() {
		if id == r.ActiveID() {
			fmt.Fprintln(stdout, id, "active")
		} else {
			fmt.Fprintln(stdout, id)
		}
	}
	return 0
}
