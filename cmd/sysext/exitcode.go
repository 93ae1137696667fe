package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/sysext/sysext/activate"
	"github.com/sysext/sysext/builder"
	"github.com/sysext/sysext/extension"
	"github.com/sysext/sysext/node"
	"github.com/sysext/sysext/oci"
	"github.com/sysext/sysext/recipe"
	"github.com/sysext/sysext/verify"
)

// Exit codes: one table for every command, printed in each --help
// (exitStatusHelp) and in docs/exit-status.md. exitCode is the one place
// that maps an error to its code.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNothingToDo = 3 // update, sync, gc, check: nothing needed doing
	exitPreflight   = 4 // the preflight refused (pull, update, sync, --preflight)
	exitDiffers     = 5 // status: sysext's view and systemd-sysext's differ
	// 128+N: interrupted by signal N (130 SIGINT, 143 SIGTERM).
)

const exitStatusHelp = `Exit status (the same for every sysext command):
  0    success
  1    failure
  2    usage error: a bad flag value, argument or reference; nothing was done
  3    nothing to do: update, sync, gc or check found nothing to change or check
  4    the preflight refused: this system cannot merge the extension
  5    status: sysext's view and systemd-sysext's differ
  130  interrupted (Ctrl-C; 143 for SIGTERM): nothing was changed`

// usageErrors are the libraries' errors for a bad value the user gave (a
// flag, an argument, a reference): exit 2 wherever they come from.
var usageErrors = []error{
	oci.ErrInvalidReference,
	builder.ErrInvalidOption,
	extension.ErrInvalidName,
	verify.ErrInvalidTrustOption,
	node.ErrNotDeclared,
	recipe.ErrUnknown, recipe.ErrArch, recipe.ErrVersion, recipe.ErrOption,
}

// exitCode maps err to the process exit code. An error that joins several
// (update and sync report one per extension) gets their common code, or 1
// when they differ.
func exitCode(err error) int {
	switch e := err.(type) {
	case nil:
		return exitOK
	case *exitError:
		return e.code
	case *interrupted:
		return 128 + int(e.sig)
	case *activate.PreflightError:
		return exitPreflight
	case interface{ Unwrap() []error }:
		code := -1
		for _, c := range e.Unwrap() {
			switch k := exitCode(c); {
			case code == -1:
				code = k
			case k != code:
				return exitFailure
			}
		}
		if code == -1 {
			return exitFailure
		}
		return code
	}
	if err == errNothingToDo {
		return exitNothingToDo
	}
	for _, u := range usageErrors {
		if err == u {
			return exitUsage
		}
	}
	if next := errors.Unwrap(err); next != nil {
		return exitCode(next)
	}
	return exitFailure
}

// exitError carries a command's exit code next to its error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad flags or arguments (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

// errNothingToDo is exit 3: update, sync, gc and check wrap it with what
// they found (nothingToDo).
var errNothingToDo = errors.New("nothing to do")

func nothingToDo(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errNothingToDo, fmt.Sprintf(format, args...))
}

// interrupted is the cause of the command context's cancellation on SIGINT
// or SIGTERM. Every command leaves nothing half-done when its context is
// cancelled (temp files removed, the tag, link or state not switched), so
// the message says so.
type interrupted struct {
	sig     syscall.Signal
	command string // set by run once the command is known
}

func (e *interrupted) Error() string {
	what := e.command
	if what == "" {
		what = "sysext"
	}
	return fmt.Sprintf("%s interrupted by %s: stopped before it finished; nothing was changed", what, signalName(e.sig))
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT (Ctrl-C)"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

// withExit attaches an exit code to err (nil stays nil).
func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code, err}
}
