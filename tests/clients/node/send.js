// Sends one message through mta-relay with Nodemailer, for tests/clients/test_clients_node.py.
//
// The job comes as JSON on stdin: {host, port, secure, requireTLS, caFile, user, pass, from, to, name,
// and either rawFile (a whole message, sent as Nodemailer's `raw`) or compose (from, to, subject, text,
// attachment: {filename, file}) with outFile: Nodemailer composes the message (streamTransport, the
// bytes it would put on the wire), writes it to outFile for the test to compare, and sends those bytes.
// Prints one JSON line: {accepted, rejected, response}. Exits non-zero on any error.
'use strict';

const fs = require('node:fs');
const nodemailer = require('nodemailer');

async function compose(spec) {
    const composer = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
    const info = await composer.sendMail({
        from: spec.from,
        to: spec.to,
        subject: spec.subject,
        text: spec.text,
        attachments: [{ filename: spec.attachment.filename, content: fs.readFileSync(spec.attachment.file) }]
    });
    return info.message;
}

async function main() {
    const job = JSON.parse(fs.readFileSync(0, 'utf8'));
    let raw;
    if (job.compose) {
        raw = await compose(job.compose);
        fs.writeFileSync(job.outFile, raw);
    } else {
        raw = fs.readFileSync(job.rawFile);
    }
    const transport = nodemailer.createTransport({
        host: job.host,
        port: job.port,
        secure: job.secure,
        requireTLS: job.requireTLS,
        name: job.name,
        auth: { user: job.user, pass: job.pass },
        tls: { ca: [fs.readFileSync(job.caFile)] },
        connectionTimeout: 30000,
        socketTimeout: 60000
    });
    try {
        const info = await transport.sendMail({ envelope: { from: job.from, to: [job.to] }, raw });
        process.stdout.write(JSON.stringify({ accepted: info.accepted, rejected: info.rejected,
                                              response: info.response }) + '\n');
    } finally {
        transport.close();
    }
}

main().catch((error) => {
    process.stderr.write(`nodemailer: ${error.code || ''} ${error.response || error.message}\n`);
    process.exit(1);
});
