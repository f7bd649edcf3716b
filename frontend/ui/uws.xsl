<?xml version="1.0" encoding="UTF-8"?>
<!-- Shows Skycut's UWS job and job-list documents as pages in a browser; clients read the XML. -->
<xsl:stylesheet version="1.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0"
    xmlns:xlink="http://www.w3.org/1999/xlink"
    exclude-result-prefixes="uws xlink">
  <xsl:output method="html" encoding="UTF-8" doctype-system="about:legacy-compat"/>

  <xsl:template match="/">
    <html lang="en">
      <head>
        <meta charset="utf-8"/>
        <title>Skycut: <xsl:apply-templates select="*" mode="title"/></title>
        <link rel="stylesheet" href="{$page}ui/style.css"/>
      </head>
      <body>
        <p><a href="{$page}">Back to the Skycut page</a></p>
        <xsl:apply-templates select="*"/>
      </body>
    </html>
  </xsl:template>

  <!-- A job is at BASE/jobs/ID and the list at BASE/jobs: the page is at BASE/ either way. -->
  <xsl:variable name="page">
    <xsl:choose>
      <xsl:when test="/uws:job">../</xsl:when>
      <xsl:otherwise>./</xsl:otherwise>
    </xsl:choose>
  </xsl:variable>

  <xsl:template match="uws:job" mode="title">job <xsl:value-of select="uws:jobId"/></xsl:template>
  <xsl:template match="uws:jobs" mode="title">UWS jobs</xsl:template>

  <xsl:template match="uws:job">
    <h1>Job <code><xsl:value-of select="uws:jobId"/></code></h1>
    <table>
      <tbody>
        <tr><th scope="row">Phase</th><td class="phase" data-phase="{uws:phase}"><xsl:value-of select="uws:phase"/></td></tr>
        <xsl:for-each select="uws:runId | uws:ownerId | uws:quote | uws:creationTime | uws:startTime | uws:endTime | uws:executionDuration | uws:destruction">
          <tr><th scope="row"><xsl:value-of select="local-name()"/></th><td><xsl:value-of select="."/></td></tr>
        </xsl:for-each>
      </tbody>
    </table>
    <h2>Parameters</h2>
    <ul class="parameters">
      <xsl:for-each select="uws:parameters/uws:parameter">
        <li><code><xsl:value-of select="@id"/>=<xsl:value-of select="."/></code></li>
      </xsl:for-each>
    </ul>
    <h2>Results</h2>
    <ul class="results">
      <xsl:for-each select="uws:results/uws:result">
        <li><a href="{@xlink:href}"><xsl:value-of select="@id"/></a>
          <xsl:if test="@mime-type"> (<xsl:value-of select="@mime-type"/>)</xsl:if></li>
      </xsl:for-each>
    </ul>
    <xsl:if test="uws:errorSummary">
      <h2>Error</h2>
      <p class="error"><xsl:value-of select="uws:errorSummary/uws:message"/></p>
    </xsl:if>
  </xsl:template>

  <xsl:template match="uws:jobs">
    <h1>UWS jobs</h1>
    <table>
      <thead>
        <tr><th scope="col">Job</th><th scope="col">Phase</th><th scope="col">Run ID</th><th scope="col">Created</th></tr>
      </thead>
      <tbody>
        <xsl:for-each select="uws:jobref">
          <tr>
            <td><a href="{@xlink:href}"><code><xsl:value-of select="@id"/></code></a></td>
            <td class="phase" data-phase="{uws:phase}"><xsl:value-of select="uws:phase"/></td>
            <td><xsl:value-of select="uws:runId"/></td>
            <td><xsl:value-of select="uws:creationTime"/></td>
          </tr>
        </xsl:for-each>
      </tbody>
    </table>
  </xsl:template>
</xsl:stylesheet>
