#!/bin/sh
# Test certificates for the TLS tests. Usage: tools/testcerts.sh OUTDIR
# Creates (all PEM, EC P-256 keys):
#   ca.pem / ca.key            test root CA
#   server.pem / server.key    localhost, 127.0.0.1, ::1, feed.test    (signed by ca)
#   expired.pem / expired.key  same names, valid 2020-01-01..2021-01-01 (signed by ca)
#   wronghost.pem / .key       only wrong.example                      (signed by ca)
#   veth.pem / veth.key        feed.test, 10.200.1.1 (the TestBed's server address) (signed by ca)
#   veth2.pem / veth2.key      feed.test, 10.200.1.1 and 10.200.1.11 (a second server address)
#   unknown_ca.pem / .key      an unrelated CA
#   untrusted.pem / .key       localhost, 127.0.0.1                     (signed by unknown_ca)
#   wildcard.pem / .key        *.example.test                           (signed by ca)
#   partialwild.pem / .key     f*.example.test (a partial wildcard)     (signed by ca)
#   cnonly.pem / .key          CN=localhost and no subjectAltName       (signed by ca)
# Needs only the openssl CLI (3.0 works: the expired cert is made with `openssl ca
# -startdate/-enddate`, since `x509 -not_before` only exists from 3.4).
set -eu
OUT=${1:?usage: testcerts.sh OUTDIR}
mkdir -p "$OUT"
cd "$OUT"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

mkca() { # name subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$1.pem" 2>/dev/null
}

# cnf for `openssl ca` (used for every leaf so dates can be set explicitly)
cacnf() { # ca_name
  mkdir -p "db_$1"
  : > "db_$1/index.txt"
  [ -f "db_$1/serial" ] || echo 1000 > "db_$1/serial"
  cat > "db_$1/ca.cnf" <<CNF
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = db_$1
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
certificate = $1.pem
private_key = $1.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = copy
[ policy_any ]
commonName = supplied
CNF
}

leaf() { # name ca san startdate enddate
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$1" -addext "subjectAltName=$3" \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
    -out "$1.csr" 2>/dev/null
  openssl ca -batch -notext -config "db_$2/ca.cnf" -in "$1.csr" -out "$1.pem" \
    -startdate "$4" -enddate "$5" 2>/dev/null
  rm -f "$1.csr"
}

# Like leaf, but the name is only in the subject CN (no subjectAltName at all).
leaf_cn_only() { # name ca cn startdate enddate
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
    -out "$1.csr" 2>/dev/null
  openssl ca -batch -notext -config "db_$2/ca.cnf" -in "$1.csr" -out "$1.pem" \
    -startdate "$4" -enddate "$5" 2>/dev/null
  rm -f "$1.csr"
}

NOW_MINUS=20240101000000Z
FUTURE=20451231000000Z
SAN_OK="DNS:localhost,DNS:feed.test,IP:127.0.0.1,IP:::1"

mkca ca "libpipeline test CA"
cacnf ca
leaf server ca "$SAN_OK" $NOW_MINUS $FUTURE
leaf expired ca "$SAN_OK" 20200101000000Z 20210101000000Z
leaf wronghost ca "DNS:wrong.example" $NOW_MINUS $FUTURE
leaf wildcard ca "DNS:*.example.test" $NOW_MINUS $FUTURE
leaf partialwild ca "DNS:f*.example.test" $NOW_MINUS $FUTURE
leaf_cn_only cnonly ca localhost $NOW_MINUS $FUTURE
leaf veth ca "DNS:feed.test,IP:10.200.1.1" $NOW_MINUS $FUTURE
leaf veth2 ca "DNS:feed.test,IP:10.200.1.1,IP:10.200.1.11" $NOW_MINUS $FUTURE

mkca unknown_ca "some other CA"
cacnf unknown_ca
leaf untrusted unknown_ca "$SAN_OK" $NOW_MINUS $FUTURE

rm -rf db_ca db_unknown_ca
echo "test certificates written to $OUT"
