// Package e2e holds Butterfly's end-to-end tests. They need root: each test
// builds "hosts" (network namespaces running one butterflyd each, joined by
// a veth underlay) and "VMs" (namespaces holding the TAP vNICs the daemons
// create), then checks what the VMs can and cannot reach. Without root every
// test is skipped.
package e2e
