package io.lazyblk.pull.s3;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * SigV4 reproduces AWS's published signatures byte for byte: the four S3 examples of the S3 API reference and AWS's
 * generic Signature Version 4 test suite; it gives the same answers from several threads at once, and refuses
 * requests it cannot sign correctly with a message naming the problem and no secret.
 */
class SigV4Test {
    // ---------------------------------------------------------------------------------------------------------------
    // S3: "Examples: Signature Calculations" in "Signature Calculations for the Authorization Header: Transferring
    // Payload in a Single Chunk (AWS Signature Version 4)", Amazon S3 API Reference,
    // https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html (mirrored at docs.amazonaws.cn).
    // Inputs, canonical requests, canonical-request hashes and signatures below are the page's. The page writes the
    // Authorization header without a space after its commas; AWS accepts both, and the generic suite (below) uses ", ",
    // which is what SigV4 writes, so the expected headers here use ", " with the page's values.
    // ---------------------------------------------------------------------------------------------------------------
    private static final String S3_AKID = "AKIAIOSFODNN7EXAMPLE";
    private static final String S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    private static final Instant S3_NOW = Instant.parse("2013-05-24T00:00:00Z");
    private static final String S3_HOST = "examplebucket.s3.amazonaws.com";
    private static final String S3_SCOPE = "20130524/us-east-1/s3/aws4_request";

    private static SigV4 s3Signer() {
        return new SigV4(S3_AKID, S3_SECRET, null, "us-east-1", "s3");
    }

    private static Map<String, String> s3Headers(String payloadHash, String... more) {
        final Map<String, String> h = new LinkedHashMap<>();
        h.put("Host", S3_HOST);
        for (int i = 0; i < more.length; i += 2) h.put(more[i], more[i + 1]);
        h.put("x-amz-content-sha256", payloadHash);
        return h;
    }

    private static void assertS3Example(SigV4 signer, Map<String, String> added, String canonicalRequest, String canonicalRequestHash,
                                        String signedHeaders, String signature) {
        assertEquals(canonicalRequest, signer.lastCanonicalRequest());
        assertEquals("AWS4-HMAC-SHA256\n20130524T000000Z\n" + S3_SCOPE + "\n" + canonicalRequestHash, signer.lastStringToSign());
        assertEquals(List.of("x-amz-date", "Authorization"), List.copyOf(added.keySet()));
        assertEquals("20130524T000000Z", added.get("x-amz-date"));
        assertEquals("AWS4-HMAC-SHA256 Credential=" + S3_AKID + "/" + S3_SCOPE + ", SignedHeaders=" + signedHeaders + ", Signature=" + signature,
            added.get("Authorization"));
    }

    @Test
    void shouldSignS3GetObjectWithRangeAsTheS3ReferenceExample() {
        final SigV4 signer = s3Signer();
        final var added = signer.sign("GET", URI.create("https://" + S3_HOST + "/test.txt"),
            s3Headers(SigV4.EMPTY_SHA256, "Range", "bytes=0-9"), SigV4.EMPTY_SHA256, S3_NOW);
        assertS3Example(signer, added, """
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""",
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972", "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    }

    @Test
    void shouldSignS3PutObjectWithAnEncodedKeyAsTheS3ReferenceExample() {
        final byte[] body = "Welcome to Amazon S3.".getBytes(StandardCharsets.UTF_8);
        final String payload = SigV4.sha256Hex(body, 0, body.length);
        assertEquals("44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072", payload, "the page's payload hash");
        final String creq = """
            PUT
            /test%24file.text

            date:Fri, 24 May 2013 00:00:00 GMT
            host:examplebucket.s3.amazonaws.com
            x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072
            x-amz-date:20130524T000000Z
            x-amz-storage-class:REDUCED_REDUNDANCY

            date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class
            44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072""";
        // The key "test$file.text" as the caller encodes it (%24), and with '$' left literal (legal in a URI path):
        // S3's canonical URI is the same, so is the signature.
        for (String path : List.of("/test%24file.text", "/test$file.text")) {
            final SigV4 signer = s3Signer();
            final var added = signer.sign("PUT", URI.create("https://" + S3_HOST + path),
                s3Headers(payload, "Date", "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class", "REDUCED_REDUNDANCY"), payload, S3_NOW);
            assertS3Example(signer, added, creq, "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class", "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
        }
    }

    @Test
    void shouldSignS3GetBucketLifecycleWithAValuelessParameterAsTheS3ReferenceExample() {
        final SigV4 signer = s3Signer();
        final var added = signer.sign("GET", URI.create("https://" + S3_HOST + "/?lifecycle"), s3Headers(SigV4.EMPTY_SHA256),
            SigV4.EMPTY_SHA256, S3_NOW);
        assertS3Example(signer, added, """
            GET
            /
            lifecycle=
            host:examplebucket.s3.amazonaws.com
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""",
            "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca", "host;x-amz-content-sha256;x-amz-date",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    }

    @Test
    void shouldSignS3ListObjectsWithItsQuerySortedAsTheS3ReferenceExample() {
        // The page's request is "?max-keys=2&prefix=J"; given here in the other order too, which must not matter.
        for (String query : List.of("max-keys=2&prefix=J", "prefix=J&max-keys=2")) {
            final SigV4 signer = s3Signer();
            final var added = signer.sign("GET", URI.create("https://" + S3_HOST + "/?" + query), s3Headers(SigV4.EMPTY_SHA256),
                SigV4.EMPTY_SHA256, S3_NOW);
            assertS3Example(signer, added, """
                GET
                /
                max-keys=2&prefix=J
                host:examplebucket.s3.amazonaws.com
                x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                x-amz-date:20130524T000000Z

                host;x-amz-content-sha256;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""",
                "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7", "host;x-amz-content-sha256;x-amz-date",
                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // AWS's generic Signature Version 4 test suite, as AWS maintains it in awslabs/aws-c-auth,
    // tests/aws-signing-test-suite/v4/<case>/ (commit 495329c2433034bd8fd53fc6ba9e0202d3fac876; Apache License 2.0,
    // "Copyright Amazon.com, Inc. or its affiliates"). Each case's request is its request.txt, the expected canonical
    // request its header-canonical-request.txt and the expected Authorization the one in header-signed-request.txt.
    // Every case: AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 2015-08-30T12:36:00Z, us-east-1, "service".
    // The signatures agree with the older copy of the suite (the zip once on docs.aws.amazon.com/general/latest/gr/
    // signature-v4-test-suite.html, e.g. get-vanilla 5fa00fa3..., post-sts-header-before 85d96828...).
    //
    // Cases left out, because this API cannot express them:
    //  - get-space-normalized/-unnormalized: the request path holds a literal space, which a java.net.URI cannot; the
    //    URI form "/example%20space/" is a different request for a non-S3 service (its "%" is encoded again: %2520).
    //  - get-header-value-multiline: obs-fold continuation lines, which java.net.http cannot send.
    //  - *-unnormalized: path normalisation switched off for a non-S3 service; SigV4 normalises every service but s3
    //    (whose no-normalisation rule the S3 examples above cover).
    //  - post-sts-header-after: the session token added after signing, unsigned; SigV4 always signs it.
    // Repeated header names (get-header-key-duplicate, get-header-value-order) are given as one header whose values are
    // joined by ',' in order, as an HTTP sender may combine them (RFC 9110 5.3) and as AWS canonicalises them.
    // ---------------------------------------------------------------------------------------------------------------
    private static final Instant SUITE_NOW = Instant.parse("2015-08-30T12:36:00Z");

    record Case(String name, String method, String target, boolean signBody, String body, String token, List<List<String>> headers,
                String canonicalRequest, String authorization) {
        Case {
            canonicalRequest = canonicalRequest.substring(0, canonicalRequest.length() - 1); // the text block's last newline
        }

        @Override
        public String toString() {
            return name;
        }
    }

    static List<Case> suite() {
        return List.of(
        new Case("get-vanilla", "GET", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        new Case("get-vanilla-query", "GET", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        new Case("get-vanilla-query-order-key-case", "GET", "/?Param2=value2&Param1=value1", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /
            Param1=value1&Param2=value2
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        new Case("get-vanilla-query-order-encoded", "GET", "/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /
            %E1%88%B4=Value1&Param=Value2&Param-3=Value3
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"),
        new Case("get-vanilla-query-unreserved", "GET", "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /
            -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
        new Case("get-vanilla-utf8-query", "GET", "/?\u1234=bar", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /
            %E1%88%B4=bar
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
        new Case("get-vanilla-empty-query-key", "GET", "/?Param1=value1", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /
            Param1=value1
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
        new Case("get-unreserved", "GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
        new Case("get-utf8", "GET", "/\u1234", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /%E1%88%B4

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        new Case("get-header-key-duplicate", "GET", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com"), List.of("My-Header1", "value2"), List.of("My-Header1", "value2"), List.of("My-Header1", "value1")),
            """
            GET
            /

            host:example.amazonaws.com
            my-header1:value2,value2,value1
            x-amz-date:20150830T123600Z

            host;my-header1;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
        new Case("get-header-value-order", "GET", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com"), List.of("My-Header1", "value4"), List.of("My-Header1", "value1"), List.of("My-Header1", "value3"), List.of("My-Header1", "value2")),
            """
            GET
            /

            host:example.amazonaws.com
            my-header1:value4,value1,value3,value2
            x-amz-date:20150830T123600Z

            host;my-header1;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"),
        new Case("get-header-value-trim", "GET", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com"), List.of("My-Header1", " value1"), List.of("My-Header2", " \"a   b   c\"")),
            """
            GET
            /

            host:example.amazonaws.com
            my-header1:value1
            my-header2:\"a b c\"
            x-amz-date:20150830T123600Z

            host;my-header1;my-header2;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
        new Case("post-vanilla", "POST", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            POST
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        new Case("post-vanilla-query", "POST", "/?Param1=value1", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            POST
            /
            Param1=value1
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
        new Case("post-vanilla-empty-query-value", "POST", "/?Param1=value1", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            POST
            /
            Param1=value1
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
        new Case("post-header-key-case", "POST", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            POST
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        new Case("post-header-key-sort", "POST", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com"), List.of("My-Header1", "value1")),
            """
            POST
            /

            host:example.amazonaws.com
            my-header1:value1
            x-amz-date:20150830T123600Z

            host;my-header1;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
        new Case("post-header-value-case", "POST", "/", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com"), List.of("My-Header1", "VALUE1")),
            """
            POST
            /

            host:example.amazonaws.com
            my-header1:VALUE1
            x-amz-date:20150830T123600Z

            host;my-header1;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
        new Case("post-x-www-form-urlencoded", "POST", "/", true, "Param1=value1", null,
            List.of(List.of("Content-Type", "application/x-www-form-urlencoded"), List.of("Host", "example.amazonaws.com"), List.of("Content-Length", "13")),
            """
            POST
            /

            content-length:13
            content-type:application/x-www-form-urlencoded
            host:example.amazonaws.com
            x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
            x-amz-date:20150830T123600Z

            content-length;content-type;host;x-amz-content-sha256;x-amz-date
            9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"),
        new Case("post-x-www-form-urlencoded-parameters", "POST", "/", true, "Param1=value1", null,
            List.of(List.of("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"), List.of("Host", "example.amazonaws.com"), List.of("Content-Length", "13")),
            """
            POST
            /

            content-length:13
            content-type:application/x-www-form-urlencoded; charset=utf-8
            host:example.amazonaws.com
            x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
            x-amz-date:20150830T123600Z

            content-length;content-type;host;x-amz-content-sha256;x-amz-date
            9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422"),
        new Case("get-slash-normalized", "GET", "//", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        new Case("get-slashes-normalized", "GET", "//example//", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /example/

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"),
        new Case("get-slash-dot-slash-normalized", "GET", "/./", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        new Case("get-slash-pointless-dot-normalized", "GET", "/./example", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /example

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"),
        new Case("get-relative-normalized", "GET", "/example/..", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        new Case("get-relative-relative-normalized", "GET", "/example1/example2/../..", false, "", null,
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        new Case("get-vanilla-with-session-token", "GET", "/", false, "", "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            GET
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z
            x-amz-security-token:6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267

            host;x-amz-date;x-amz-security-token
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"),
        new Case("post-sts-header-before", "POST", "/", false, "", "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==",
            List.of(List.of("Host", "example.amazonaws.com")),
            """
            POST
            /

            host:example.amazonaws.com
            x-amz-date:20150830T123600Z
            x-amz-security-token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==

            host;x-amz-date;x-amz-security-token
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
        );
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("suite")
    void shouldProduceTheCanonicalRequestAndAuthorizationOfAwsGenericSuiteCase(Case c) {
        final Map<String, String> headers = new LinkedHashMap<>();
        for (List<String> h : c.headers()) headers.merge(h.get(0), h.get(1), (a, b) -> a + "," + b);
        final byte[] body = c.body().getBytes(StandardCharsets.UTF_8);
        final String payloadHash = SigV4.sha256Hex(body, 0, body.length);
        if (c.signBody()) headers.put("X-Amz-Content-Sha256", payloadHash); // the suite's sign_body: the hash is a signed header
        final SigV4 signer = new SigV4("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", c.token(), "us-east-1", "service");
        final var added = signer.sign(c.method(), URI.create("https://" + headers.get("Host") + c.target()), headers, payloadHash, SUITE_NOW);

        assertEquals("20150830T123600Z", added.get("x-amz-date"));
        assertEquals(c.authorization(), added.get("Authorization"));
        if (c.token() == null) {
            assertEquals(List.of("x-amz-date", "Authorization"), List.copyOf(added.keySet()));
            assertEquals(c.canonicalRequest(), signer.lastCanonicalRequest());
        } else {
            assertEquals(List.of("x-amz-date", "x-amz-security-token", "Authorization"), List.copyOf(added.keySet()));
            assertEquals(c.token(), added.get("x-amz-security-token"));
            // The debug copy hides the token; the Authorization above proves the token was in what was signed.
            assertEquals(c.canonicalRequest().replace(c.token(), "<redacted>"), signer.lastCanonicalRequest());
            assertFalse(signer.lastCanonicalRequest().contains(c.token()));
        }
        assertTrue(signer.lastStringToSign().startsWith("AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Concurrency, encoding and hostile input. Expected values here are SigV4's own serial results, not AWS's.
    // ---------------------------------------------------------------------------------------------------------------

    @Test
    void shouldSignTheSameFromFourThreadsOnDifferentDatesAsSerially() throws Exception {
        final SigV4 shared = new SigV4(S3_AKID, S3_SECRET, "session/token+1==", "eu-west-3", "s3");
        final int threads = 4;
        final int rounds = 300;
        // Each thread signs its own request on its own day, so the one cached signing key keeps being replaced under it.
        final List<Instant> days = List.of(S3_NOW, S3_NOW.plusSeconds(86_400), Instant.parse("2026-02-28T23:59:59Z"), Instant.parse("2026-03-01T00:00:00Z"));
        final List<Map<String, String>> expected = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final SigV4 serial = new SigV4(S3_AKID, S3_SECRET, "session/token+1==", "eu-west-3", "s3");
            expected.add(Map.copyOf(signRequestOfThread(serial, t, days.get(t))));
        }
        final ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            final CountDownLatch start = new CountDownLatch(1);
            final List<Future<String>> results = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                final int me = t;
                results.add(pool.submit(() -> {
                    start.await();
                    for (int r = 0; r < rounds; r++) {
                        final Map<String, String> got = signRequestOfThread(shared, me, days.get(me));
                        if (!got.equals(expected.get(me))) return "thread " + me + " round " + r + ": " + got + " != " + expected.get(me);
                        if (!shared.lastCanonicalRequest().contains("/bucket/key-" + me)) return "thread " + me + " saw another's canonical request";
                    }
                    return "ok";
                }));
            }
            start.countDown();
            for (Future<String> f : results) assertEquals("ok", f.get(60, TimeUnit.SECONDS));
        } finally {
            pool.shutdownNow();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
        }
    }

    private static Map<String, String> signRequestOfThread(SigV4 signer, int t, Instant now) {
        return signer.sign("GET", URI.create("https://s3.eu-west-3.amazonaws.com/bucket/key-" + t + "?partNumber=" + t),
            Map.of("host", "s3.eu-west-3.amazonaws.com", "x-amz-content-sha256", SigV4.UNSIGNED_PAYLOAD, "range", "bytes=" + t + "-4095"),
            SigV4.UNSIGNED_PAYLOAD, now);
    }

    @Test
    void shouldTrimAndCollapseSpacesInHeaderValues() {
        final SigV4 signer = s3Signer();
        final var a = signer.sign("GET", URI.create("https://" + S3_HOST + "/k"),
            s3Headers(SigV4.EMPTY_SHA256, "X-Amz-Meta-Note", "  a   b \t c  ", "Range", "\tbytes=0-9 "), SigV4.EMPTY_SHA256, S3_NOW);
        assertTrue(signer.lastCanonicalRequest().contains("\nrange:bytes=0-9\nx-amz-content-sha256:"), signer.lastCanonicalRequest());
        assertTrue(signer.lastCanonicalRequest().contains("\nx-amz-meta-note:a b c\n"), signer.lastCanonicalRequest());
        final var b = s3Signer().sign("GET", URI.create("https://" + S3_HOST + "/k"),
            s3Headers(SigV4.EMPTY_SHA256, "x-amz-meta-note", "a b c", "range", "bytes=0-9"), SigV4.EMPTY_SHA256, S3_NOW);
        assertEquals(a, b, "the same request, spaced differently, signs the same");
    }

    @Test
    void shouldEncodeAnS3KeyOnceWhateverEscapesTheCallerChose() {
        // Key "dir/a b+c=é$(1).img" under bucket "bkt": S3's canonical URI encodes every byte but A-Za-z0-9-._~ and '/'.
        final String canonical = "/bkt/dir/a%20b%2Bc%3D%C3%A9%24%281%29.img";
        final SigV4 signer = s3Signer();
        final var strict = signer.sign("GET", URI.create("https://s3.amazonaws.com" + canonical), s3Headers(SigV4.EMPTY_SHA256),
            SigV4.EMPTY_SHA256, S3_NOW);
        assertEquals(canonical, signer.lastCanonicalRequest().split("\n")[1]);
        // Lower-case hex and RFC 3986 sub-delimiters left literal denote the same key, so they sign the same.
        final var loose = signer.sign("GET", URI.create("https://s3.amazonaws.com/bkt/dir/a%20b+c=%c3%a9$(1).img"), s3Headers(SigV4.EMPTY_SHA256),
            SigV4.EMPTY_SHA256, S3_NOW);
        assertEquals(canonical, signer.lastCanonicalRequest().split("\n")[1]);
        assertEquals(strict, loose);
        // An encoded '/' inside a key segment stays encoded; S3 does not collapse "//" or resolve "..".
        signer.sign("GET", URI.create("https://s3.amazonaws.com/bkt/a%2Fb//../c"), s3Headers(SigV4.EMPTY_SHA256), SigV4.EMPTY_SHA256, S3_NOW);
        assertEquals("/bkt/a%2Fb//../c", signer.lastCanonicalRequest().split("\n")[1]);
        // Query: "?uploads" is "uploads=", values decoded then re-encoded, sorted by name then value, '+' is a plus.
        signer.sign("POST", URI.create("https://s3.amazonaws.com/bkt/k?uploads&prefix=a%2Fb+c&a=2&a=1&x=%7e"), s3Headers(SigV4.EMPTY_SHA256),
            SigV4.EMPTY_SHA256, S3_NOW);
        assertEquals("a=1&a=2&prefix=a%2Fb%2Bc&uploads=&x=~", signer.lastCanonicalRequest().split("\n")[2]);
    }

    @Test
    void shouldEncodeTheAlreadyEncodedPathAgainForServicesOtherThanS3() {
        // AWS IAM User Guide, "Create a signed AWS API request": "Each path segment must be URI-encoded twice (except for
        // Amazon S3 which only gets URI-encoded once)"; the former General Reference page "Task 1: Create a canonical
        // request" gave the example canonical URI "/documents%2520and%2520settings/". No suite case pins this (see
        // get-space above), so the documented example does.
        final SigV4 generic = new SigV4("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", null, "us-east-1", "service");
        generic.sign("GET", URI.create("https://example.amazonaws.com/documents%20and%20settings/"), Map.of("Host", "example.amazonaws.com"),
            SigV4.EMPTY_SHA256, SUITE_NOW);
        assertEquals("/documents%2520and%2520settings/", generic.lastCanonicalRequest().split("\n")[1]);
        final SigV4 s3 = s3Signer();
        s3.sign("GET", URI.create("https://" + S3_HOST + "/documents%20and%20settings/"), s3Headers(SigV4.EMPTY_SHA256), SigV4.EMPTY_SHA256, S3_NOW);
        assertEquals("/documents%20and%20settings/", s3.lastCanonicalRequest().split("\n")[1]);
    }

    @Test
    void shouldRefuseARequestWithoutAHostHeaderNamingIt() {
        final Map<String, String> noHost = new LinkedHashMap<>(s3Headers(SigV4.EMPTY_SHA256));
        noHost.remove("Host");
        final var e = assertThrows(IllegalArgumentException.class,
            () -> s3Signer().sign("GET", URI.create("https://" + S3_HOST + "/k"), noHost, SigV4.EMPTY_SHA256, S3_NOW));
        assertTrue(e.getMessage().contains("host"), e.getMessage());
    }

    @Test
    void shouldRefuseWhatItCannotSignCorrectlyWithoutQuotingAnyValue() {
        final SigV4 signer = new SigV4(S3_AKID, S3_SECRET, "TOKENVALUE", "us-east-1", "s3");
        final URI uri = URI.create("https://" + S3_HOST + "/k");
        final Map<String, String> injected = s3Headers(SigV4.EMPTY_SHA256, "x-amz-meta-a", "SECRETVALUE\r\nx-amz-acl: public-read");
        final Map<String, String> twice = s3Headers(SigV4.EMPTY_SHA256, "host", S3_HOST);
        final Map<String, String> ownDate = s3Headers(SigV4.EMPTY_SHA256, "X-Amz-Date", "20130524T000000Z");
        final Map<String, String> noContentHash = new LinkedHashMap<>(Map.of("host", S3_HOST));
        for (var bad : List.<Map.Entry<String, Runnable>>of(
            Map.entry("x-amz-meta-a", () -> signer.sign("GET", uri, injected, SigV4.EMPTY_SHA256, S3_NOW)),
            Map.entry("host", () -> signer.sign("GET", uri, twice, SigV4.EMPTY_SHA256, S3_NOW)),
            Map.entry("x-amz-date", () -> signer.sign("GET", uri, ownDate, SigV4.EMPTY_SHA256, S3_NOW)),
            Map.entry("x-amz-content-sha256", () -> signer.sign("GET", uri, noContentHash, SigV4.EMPTY_SHA256, S3_NOW)),
            Map.entry("x-amz-content-sha256", () -> signer.sign("GET", uri, s3Headers(SigV4.UNSIGNED_PAYLOAD), SigV4.EMPTY_SHA256, S3_NOW)),
            Map.entry("payloadHash", () -> signer.sign("GET", uri, s3Headers("E3B0"), "E3B0", S3_NOW)))) {
            final var e = assertThrows(IllegalArgumentException.class, bad.getValue()::run, bad.getKey());
            assertTrue(e.getMessage().contains(bad.getKey()), e.getMessage());
            assertFalse(e.getMessage().contains("SECRETVALUE") || e.getMessage().contains("TOKENVALUE") || e.getMessage().contains(S3_SECRET), e.getMessage());
        }
        final String shown = signer.toString();
        assertFalse(shown.contains(S3_SECRET) || shown.contains("TOKENVALUE"), shown);
        assertTrue(shown.contains(S3_AKID), shown);
        final var e = assertThrows(IllegalArgumentException.class, () -> new SigV4(S3_AKID, "", null, "us-east-1", "s3"));
        assertTrue(e.getMessage().contains("secretAccessKey"), e.getMessage());
        final var region = assertThrows(IllegalArgumentException.class, () -> new SigV4(S3_AKID, S3_SECRET, null, "us-east-1/x", "s3"));
        assertTrue(region.getMessage().contains("region"), region.getMessage());
    }
}
