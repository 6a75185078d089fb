package model

import "fmt"

// Code classifies an Error.
type Code int

// Error codes.
const (
	// CodeInvalid: the request is malformed; nothing was changed.
	CodeInvalid Code = iota + 1
	// CodeNotFound: the request names an object that does not exist.
	CodeNotFound
	// CodeDataplane: the dataplane failed to apply a valid request.
	CodeDataplane
)

// The original's error descriptions. An Error's text starts with one of
// these, followed by ": " and details.
const (
	TextBadNIC       = "Bad NIC format"
	TextBadNICUpdate = "Bad Nic update format"
	TextBadSG        = "Bad Security Group format"
	TextBadRule      = "Bad Security Group rule format"
	TextBadIP        = "Bad IP format"
	TextSGNotFound   = "Security Group not found"
	TextSGDetails    = "Sg not found"
)

// Error is the error type of every Store operation.
type Error struct {
	Code Code
	// Text is the description: the original's text, then details.
	Text string
	// Err is the underlying cause (a dataplane error), if any.
	Err error
}

// Errorf returns an *Error with code c whose text is prefix, ": " and the
// formatted details.
func Errorf(c Code, prefix, format string, args ...any) *Error {
	return &Error{Code: c, Text: prefix + ": " + fmt.Sprintf(format, args...)}
}

// Error returns the description and, if any, the cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Text + ": " + e.Err.Error()
	}
	return e.Text
}

// Description is the text an API reply carries (same as Error).
func (e *Error) Description() string { return e.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func notFoundNIC(id string) *Error {
	return &Error{Code: CodeNotFound, Text: "NIC does not exist with id " + id}
}

func dataplaneErr(text string, err error) *Error {
	return &Error{Code: CodeDataplane, Text: text, Err: err}
}
