// The cheapest possible exec: a static binary that does nothing. shim-bench reports it as the floor
// that no FlexVolume driver binary can beat on the machine at hand.
int main() {
  return 0;
}
