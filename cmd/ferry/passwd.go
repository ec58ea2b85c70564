package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ferrygw/ferry/gateway/broker"
	"golang.org/x/term"
)

// cmdPasswd sets a user's password in a broker users file (see
// broker.users_file). The password is read without echo from the
// terminal, twice, or as one line from stdin when stdin is not a terminal;
// never from the arguments, and it is never printed.
func cmdPasswd(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "users file to create or update (broker.users_file)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry passwd -f FILE USER")
		fs.PrintDefaults()
	}
	if fs.Parse(args) != nil {
		return 2
	}
	if *file == "" || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	user := fs.Arg(0)
	// A name the broker would refuse is refused before the password is
	// asked for; one with an ACL pattern character ('%', '+', '#', '/')
	// could stand for other users' topics in a rule's %u.
	if err := broker.CheckUserName(user); err != nil {
		fmt.Fprintln(stderr, "ferry passwd:", err)
		return 1
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "ferry passwd:", err)
		return 1
	}
	defer clear(pw)
	if err := broker.SetUser(*file, user, pw); err != nil {
		fmt.Fprintln(stderr, "ferry passwd:", err)
		return 1
	}
	fmt.Fprintf(stderr, "password for %q set in %s\n", user, *file)
	return 0
}

// readPassword reads the new password: twice without echo when stdin is
// a terminal, else its first line.
func readPassword(stdin io.Reader, stderr io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "New password: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(stderr, "Repeat password: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		defer clear(again)
		if err != nil {
			clear(pw)
			return nil, fmt.Errorf("read password: %w", err)
		}
		if !bytes.Equal(pw, again) {
			clear(pw)
			return nil, errors.New("the passwords differ")
		}
		if len(pw) == 0 {
			return nil, errors.New("empty password")
		}
		return pw, nil
	}
	line, err := bufio.NewReader(stdin).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password from stdin: %w", err)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, errors.New("empty password on stdin (pipe the password as one line)")
	}
	return line, nil
}
